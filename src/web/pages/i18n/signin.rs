//! Labels of signing in and out, and of the session (both consoles share them).

pub const EN: &[(&str, &str)] = &[
    ("signin.title", "Sign-in"),
    ("signin.failed.title", "Sign-in did not finish"),
    (
        "signin.failed.again",
        "The sign-in could not be completed. It may have expired, been used already, or been started in another window. Please start again.",
    ),
    (
        "signin.failed.start",
        "The sign-in could not be started from this address.",
    ),
    (
        "signin.failed.no_provider",
        "No identity provider is configured for this sign-in.",
    ),
    (
        "signin.failed.provider",
        "The identity provider or the gateway's storage cannot be reached right now. Please try again in a moment.",
    ),
    (
        "signin.failed.factor",
        "Your role needs a second factor: sign in again and enter the one-time code when asked.",
    ),
    (
        "signin.failed.role",
        "Your identity provider grants you no role here (or roles that may not be held together). Ask your administrator.",
    ),
    (
        "signin.failed.csrf",
        "The form's security token is missing or does not match. Reload the page and try again.",
    ),
    ("signin.staff", "Staff sign-in"),
    ("signin.subject", "Sign in to my portal"),
    ("signin.signed_in_as", "Signed in as"),
    ("signout.button", "Sign out"),
];

pub const ZH_CN: &[(&str, &str)] = &[
    ("signin.title", "登录"),
    ("signin.failed.title", "登录未完成"),
    (
        "signin.failed.again",
        "无法完成登录。登录可能已过期、已被使用，或是在另一个窗口中开始的。请重新开始。",
    ),
    ("signin.failed.start", "无法从此地址开始登录。"),
    ("signin.failed.no_provider", "此登录未配置身份提供方。"),
    (
        "signin.failed.provider",
        "暂时无法连接身份提供方或网关存储。请稍后再试。",
    ),
    (
        "signin.failed.factor",
        "您的角色需要第二重验证：请重新登录，并在提示时输入一次性验证码。",
    ),
    (
        "signin.failed.role",
        "您的身份提供方未授予您此处的任何角色（或授予了不可同时持有的角色）。请联系管理员。",
    ),
    (
        "signin.failed.csrf",
        "表单的安全令牌缺失或不匹配。请刷新页面后重试。",
    ),
    ("signin.staff", "工作人员登录"),
    ("signin.subject", "登录我的门户"),
    ("signin.signed_in_as", "当前登录"),
    ("signout.button", "退出登录"),
];
