//! What each operation requires, read from the OpenAPI document: the
//! `security` every `#[utoipa::path]` declares is the one statement of an
//! operation's scopes, for readers of the document and for the middleware
//! alike.
//!
//! How an operation's `security` reads:
//! - `[{}]`: public.
//! - `[{}, {"bearer": []}]`: the public catalogue: public, or any valid
//!   token when `ORDO_PUBLIC_CATALOGUE=false`.
//! - `[{"bearer": []}]`: any valid token.
//! - `[{"bearer": ["orders:read"]}, {"bearer": ["customer"]}]`: a token
//!   holding one of those scopes (`admin` holds them all).
//!
//! An operation that declares nothing is open to `admin` only, and listed
//! by [`Policy::undeclared`] so that a test fails.

use std::collections::HashMap;

use axum::http::Method;

use super::scope::{Requirement, Scope};

/// The name of the bearer scheme in the document.
pub const SCHEME: &str = "bearer";

/// Routes outside the OpenAPI document that anyone may call.
const PUBLIC_ROUTES: [(&str, &str); 2] = [("GET", "/openapi.json"), ("GET", "/docs")];

/// Every operation's requirement.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    requirements: HashMap<(Method, String), Requirement>,
    undeclared: Vec<String>,
    invalid: Vec<String>,
}

impl Policy {
    /// The policy the document `api` declares.
    pub fn from_document(api: &utoipa::openapi::OpenApi, public_catalogue: bool) -> Policy {
        let document = serde_json::to_value(api).unwrap_or_default();
        let mut policy = Policy::default();
        let paths = document["paths"].as_object().cloned().unwrap_or_default();
        for (path, item) in paths {
            let Some(item) = item.as_object() else {
                continue;
            };
            for (method, operation) in item {
                let Ok(method) = method.to_ascii_uppercase().parse::<Method>() else {
                    continue;
                };
                let name = format!("{method} {path}");
                let requirement = match operation.get("security").and_then(|s| s.as_array()) {
                    None => {
                        policy.undeclared.push(name);
                        Requirement::AnyOf(Vec::new())
                    }
                    Some(alternatives) => match read(alternatives, public_catalogue) {
                        Ok(requirement) => requirement,
                        Err(problem) => {
                            policy.invalid.push(format!("{name}: {problem}"));
                            Requirement::AnyOf(Vec::new())
                        }
                    },
                };
                policy
                    .requirements
                    .insert((method, path.clone()), requirement);
            }
        }
        for (method, path) in PUBLIC_ROUTES {
            if let Ok(method) = method.parse() {
                policy
                    .requirements
                    .insert((method, path.to_owned()), Requirement::Public);
            }
        }
        policy
    }

    /// What `method` on the route `template` (as the router names it)
    /// requires; a route the policy does not know is open to `admin` only.
    pub fn requirement(&self, method: &Method, template: &str) -> Requirement {
        // HEAD is answered by the GET route.
        let method = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        self.requirements
            .get(&(method.clone(), template.to_owned()))
            .cloned()
            .unwrap_or(Requirement::AnyOf(Vec::new()))
    }

    /// Operations that declare no `security`.
    pub fn undeclared(&self) -> &[String] {
        &self.undeclared
    }

    /// Operations whose `security` this module cannot read.
    pub fn invalid(&self) -> &[String] {
        &self.invalid
    }

    /// Every operation and its requirement, sorted by path.
    pub fn operations(&self) -> Vec<(Method, String, Requirement)> {
        let mut all: Vec<_> = self
            .requirements
            .iter()
            .map(|((method, path), requirement)| {
                (method.clone(), path.clone(), requirement.clone())
            })
            .collect();
        all.sort_by(|a, b| (&a.1, a.0.as_str()).cmp(&(&b.1, b.0.as_str())));
        all
    }
}

/// One operation's `security` array as a requirement.
fn read(alternatives: &[serde_json::Value], public_catalogue: bool) -> Result<Requirement, String> {
    let mut public = false;
    let mut any_token = false;
    let mut scopes = Vec::new();
    for alternative in alternatives {
        let Some(schemes) = alternative.as_object() else {
            return Err("a security requirement that is not an object".into());
        };
        if schemes.is_empty() {
            public = true;
            continue;
        }
        for (scheme, required) in schemes {
            if scheme != SCHEME {
                return Err(format!("unknown scheme {scheme:?}"));
            }
            let required = required.as_array().cloned().unwrap_or_default();
            match required.as_slice() {
                [] => any_token = true,
                [one] => {
                    let word = one.as_str().unwrap_or_default();
                    scopes.push(word.parse::<Scope>().map_err(|e| e.to_string())?);
                }
                _ => return Err(
                    "one scope per alternative (scopes in one alternative would all be required)"
                        .into(),
                ),
            }
        }
    }
    Ok(match (public, any_token, scopes.is_empty()) {
        (true, false, true) => Requirement::Public,
        (true, true, true) if public_catalogue => Requirement::Public,
        (true, true, true) => Requirement::Authenticated,
        (false, true, true) => Requirement::Authenticated,
        (false, false, false) => Requirement::AnyOf(scopes),
        _ => return Err("mixes public, any-token and scoped alternatives".into()),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::json;

    use super::*;

    fn requirement(security: serde_json::Value, catalogue: bool) -> Result<Requirement, String> {
        read(security.as_array().unwrap(), catalogue)
    }

    #[test]
    fn security_arrays_read_as_requirements() {
        assert_eq!(
            requirement(json!([{}]), false).unwrap(),
            Requirement::Public
        );
        assert_eq!(
            requirement(json!([{}, {"bearer": []}]), true).unwrap(),
            Requirement::Public
        );
        assert_eq!(
            requirement(json!([{}, {"bearer": []}]), false).unwrap(),
            Requirement::Authenticated
        );
        assert_eq!(
            requirement(
                json!([{"bearer": ["orders:read"]}, {"bearer": ["customer"]}]),
                true
            )
            .unwrap(),
            Requirement::AnyOf(vec![Scope::OrdersRead, Scope::Customer])
        );
        assert!(requirement(json!([{"bearer": ["orders:read", "ops"]}]), true).is_err());
        assert!(requirement(json!([{"bearer": ["root"]}]), true).is_err());
        assert!(requirement(json!([{"basic": []}]), true).is_err());
    }

    /// Every operation of the API states what it requires; one added
    /// without a `security` fails here.
    #[test]
    fn every_operation_declares_its_scopes() {
        let policy = Policy::from_document(&crate::openapi(), true);
        assert_eq!(
            policy.undeclared(),
            [] as [String; 0],
            "operations without security"
        );
        assert_eq!(policy.invalid(), [] as [String; 0], "unreadable security");
        assert!(policy.operations().len() > 20);
    }
}
