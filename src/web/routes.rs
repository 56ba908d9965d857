//! The route table's vocabulary. Every route is mounted in a group that declares its audit
//! coverage: audited as a given kind, or unaudited for one of the reasons DESIGN.md allows.
//! `web::router` builds the router and the audit layer's coverage map from the same groups, so
//! a route cannot exist without a declared coverage, and `web::route_table` lists them for the
//! test that walks every route.

use std::collections::HashMap;

use axum::{
    Router,
    handler::Handler,
    routing::{self, MethodRouter},
};
use http::Method;

use super::AppState;

/// The kinds of audit record a route group may declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditKind {
    Data,
    Profile,
    Public,
    Token,
    Subject,
    Admin,
}

impl AuditKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Data => "data",
            Self::Profile => "profile",
            Self::Public => "public",
            Self::Token => "token",
            Self::Subject => "subject",
            Self::Admin => "admin",
        }
    }
}

/// The only reasons a route may leave no audit record (DESIGN.md, "Unaudited by design").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unaudited {
    Health,
    Readiness,
    Metrics,
    Jwks,
    Discovery,
    StaticAssets,
}

/// What a route's group declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coverage {
    Audited(AuditKind),
    Unaudited(Unaudited),
}

impl Coverage {
    /// The record kind, or `None` for an unaudited route.
    pub fn kind(self) -> Option<&'static str> {
        match self {
            Self::Audited(k) => Some(k.as_str()),
            Self::Unaudited(_) => None,
        }
    }
}

/// One method on one path template; `method` is `None` for a route that takes any method.
pub struct Route {
    method: Option<Method>,
    path: &'static str,
    handler: MethodRouter<AppState>,
}

/// Routes mounted together under one declared coverage.
pub struct Group {
    coverage: Coverage,
    routes: Vec<Route>,
}

/// A row of the route table, as the walking test sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteEntry {
    pub method: Option<Method>,
    pub path: &'static str,
    pub coverage: Coverage,
}

pub fn audited(kind: AuditKind, routes: Vec<Route>) -> Group {
    Group {
        coverage: Coverage::Audited(kind),
        routes,
    }
}

pub fn unaudited(reason: Unaudited, routes: Vec<Route>) -> Group {
    Group {
        coverage: Coverage::Unaudited(reason),
        routes,
    }
}

macro_rules! method_route {
    ($name:ident, $method:expr) => {
        pub fn $name<H, T>(path: &'static str, handler: H) -> Route
        where
            H: Handler<T, AppState>,
            T: 'static,
        {
            Route {
                method: $method,
                path,
                handler: routing::$name(handler),
            }
        }
    };
}

method_route!(get, Some(Method::GET));
method_route!(post, Some(Method::POST));
method_route!(delete, Some(Method::DELETE));
method_route!(any, None);

/// Each route template's declared coverage, for the audit layer (looked up by `MatchedPath`).
#[derive(Debug, Default)]
pub struct Declared(HashMap<&'static str, Coverage>);

impl Declared {
    pub fn coverage(&self, template: &str) -> Option<Coverage> {
        self.0.get(template).copied()
    }
}

/// The table's rows, without the handlers.
pub fn entries(groups: &[Group]) -> Vec<RouteEntry> {
    groups
        .iter()
        .flat_map(|g| {
            g.routes.iter().map(|r| RouteEntry {
                method: r.method.clone(),
                path: r.path,
                coverage: g.coverage,
            })
        })
        .collect()
}

/// The router of every declared route, and the coverage map the audit layer reads. A template
/// declared under two different coverages is a programming error, refused at start.
pub fn mount(groups: Vec<Group>) -> (Router<AppState>, Declared) {
    let mut router = Router::new();
    let mut declared = Declared::default();
    for group in groups {
        for route in group.routes {
            let prev = declared.0.insert(route.path, group.coverage);
            assert!(
                prev.is_none_or(|p| p == group.coverage),
                "route {} declared under two audit coverages",
                route.path
            );
            // Same path, another method: axum merges the method routers.
            router = router.route(route.path, route.handler);
        }
    }
    (router, declared)
}
