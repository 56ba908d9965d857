use super::Institution;

/// Who a data request is decided for: an authenticated institution, or the public.
#[derive(Debug, Clone)]
pub enum Principal {
    Institution(Institution),
    /// No token, on the public path: the policy's `public` role.
    Public,
}

/// The policy role that anonymous requests on the public path are decided as.
pub const PUBLIC_ROLE: &str = "public";

impl Principal {
    pub fn role(&self) -> &str {
        match self {
            Principal::Institution(i) => &i.role,
            Principal::Public => PUBLIC_ROLE,
        }
    }

    pub fn org(&self) -> Option<&str> {
        match self {
            Principal::Institution(i) => Some(&i.org),
            Principal::Public => None,
        }
    }

    pub fn region(&self) -> Option<&str> {
        match self {
            Principal::Institution(i) => i.region.as_deref(),
            Principal::Public => None,
        }
    }

    pub fn client_id(&self) -> &str {
        match self {
            Principal::Institution(i) => &i.client_id,
            Principal::Public => "-",
        }
    }
}
