//! Identity and permissions as an attacker tries them: every operation of
//! the OpenAPI document against every kind of caller, customers probing
//! each other, forged JWTs, revocation across processes, rate limits, and
//! the actor recorded in the events.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use api::auth::jwt::{JwksSource, JwtConfig};
use api::auth::{Requirement, Scope, Scopes};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::{Answer, Api, Client};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

const ISSUER: &str = "https://id.example.test";
const AUDIENCE: &str = "ordo-test";

/// An Ed25519 key pair of a test OpenID provider, and its JWKS file.
struct Provider {
    pkcs8: Vec<u8>,
    public: Vec<u8>,
    jwks: std::path::PathBuf,
}

impl Provider {
    fn new() -> Provider {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        use ring::signature::KeyPair as _;
        let public = pair.public_key().as_ref().to_vec();
        let jwks = std::env::temp_dir().join(format!("ordo-jwks-{}.json", uuid::Uuid::new_v4()));
        let set = json!({ "keys": [{
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": "k1",
            "x": URL_SAFE_NO_PAD.encode(&public),
        }]});
        std::fs::write(&jwks, set.to_string()).unwrap();
        Provider {
            pkcs8: pkcs8.as_ref().to_vec(),
            public,
            jwks,
        }
    }

    fn config(&self) -> JwtConfig {
        JwtConfig {
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            jwks: JwksSource::File(self.jwks.clone()),
            user_claim: "ordo_user_id".into(),
        }
    }

    fn claims(&self, scope: &str, expires_in: i64) -> Value {
        let now = chrono::Utc::now().timestamp();
        json!({ "iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "scope": scope,
                "iat": now, "exp": now + expires_in })
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some("k1".into());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(&self.pkcs8)).unwrap()
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.jwks);
    }
}

/// A token of `alg: none`: a header and claims, and no signature.
fn unsigned(claims: &Value) -> String {
    let header =
        URL_SAFE_NO_PAD.encode(json!({ "alg": "none", "typ": "JWT", "kid": "k1" }).to_string());
    format!("{header}.{}.", URL_SAFE_NO_PAD.encode(claims.to_string()))
}

/// HS256 signed with the provider's public key as the secret: the classic
/// algorithm-confusion forgery.
fn confused(provider: &Provider, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("k1".into());
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_secret(&provider.public).unwrap(),
    )
    .unwrap()
}

/// What a credential should get: `Ok(scopes)` for one that authenticates.
#[derive(Debug, Clone)]
enum Credential {
    Refused,
    Valid(Scopes),
}

/// The world the matrix runs in: customer A's user and order, a product,
/// customer B.
struct World {
    user_a: String,
    order_a: String,
    product: String,
    victim_token: String,
}

fn concrete(path: &str, world: &World) -> String {
    path.replace("{stream_id}", &format!("order-{}", world.order_a))
        .replace("{order_id}", &world.order_a)
        .replace("{name}", "orders")
        .replace(
            "{id}",
            if path.starts_with("/users") {
                &world.user_a
            } else if path.starts_with("/products") {
                &world.product
            } else if path.starts_with("/tokens") {
                &world.victim_token
            } else {
                &world.order_a
            },
        )
}

fn body(method: &str, path: &str, world: &World) -> Option<Value> {
    if method != "POST" {
        return None;
    }
    let unique = uuid::Uuid::new_v4().simple().to_string();
    Some(match path {
        "/users" => json!({ "email": format!("{unique}@example.com"), "name": "M" }),
        "/users/{id}/rename" => json!({ "name": "Renamed" }),
        "/products" => {
            json!({ "sku": format!("M-{}", &unique[..12]), "name": "M", "price": "1.00", "stock": 5 })
        }
        "/products/{id}/restock" => json!({ "quantity": 1 }),
        "/products/{id}/price" => json!({ "price": "2.00" }),
        "/orders" => {
            json!({ "user_id": world.user_a, "lines": [{ "product_id": world.product, "quantity": 1 }] })
        }
        "/orders/{id}/pay" => json!({ "amount": "1.00" }),
        "/orders/{id}/cancel" => json!({ "reason": "matrix" }),
        "/tokens" => json!({ "scopes": ["ops"] }),
        _ => json!({}),
    })
}

async fn call(client: &Client, method: &str, path: &str, body: Option<Value>) -> Answer {
    match (method, body) {
        ("GET", _) => client.get(path).await,
        ("DELETE", _) => client.delete(path).await,
        (_, Some(body)) => client.post(path, body).await,
        _ => client.post_empty(path).await,
    }
}

/// Every operation × every kind of caller gets exactly what the security
/// reference prescribes: public routes answer anyone (they do not read
/// credentials); elsewhere, 401 for every credential that fails a check,
/// 403 for a valid one without the scope, and for a customer on another
/// customer's user or order, 404 (or 403 when a body names the other
/// user). No 5xx anywhere.
#[tokio::test]
async fn every_operation_answers_every_caller_as_its_declared_scopes_say() {
    let provider = Provider::new();
    let config = provider.config();
    let api = Api::start_custom(false, |s| s.auth.jwt = Some(config)).await;
    let user_a = api.user("Alice").await.id();
    let user_b = api.user("Bob").await.id();
    let product = api.product(1_000_000, "1.00").await.id();
    let order = api
        .post(
            "/orders",
            json!({ "user_id": user_a, "lines": [{ "product_id": product, "quantity": 1 }] }),
        )
        .await;
    assert_eq!(order.status, 202, "{order:?}");
    let world = World {
        order_a: order.id(),
        user_a: user_a.clone(),
        product,
        victim_token: {
            let made = api.post("/tokens", json!({ "scopes": ["ops"] })).await;
            made.body["id"].as_str().unwrap().to_owned()
        },
    };

    let mut credentials: Vec<(String, Option<String>, Credential)> = vec![
        ("no token".into(), None, Credential::Refused),
        (
            "malformed".into(),
            Some("ordo_not-a-token".into()),
            Credential::Refused,
        ),
        (
            "unknown".into(),
            Some(api::auth::TokenSecret::generate().expose()),
            Credential::Refused,
        ),
        (
            "garbage".into(),
            Some("eyJhbGciOi.e30.c2ln".into()),
            Credential::Refused,
        ),
    ];
    let expired = {
        let made = api
            .post("/tokens", json!({ "scopes": ["admin"], "expires_in": 1 }))
            .await;
        made.body["token"].as_str().unwrap().to_owned()
    };
    let revoked = api.token(&["admin"], None).await;
    let revoked_id = api::auth::TokenSecret::parse(&revoked).unwrap().id;
    // Not by itself: an admin does not lock itself out by a slip.
    let itself = api
        .client(Some(&revoked))
        .delete(&format!("/tokens/{revoked_id}"))
        .await;
    common::assert_problem(&itself, 409, "invalid_transition");
    assert_eq!(
        api.delete(&format!("/tokens/{revoked_id}")).await.status,
        200
    );
    credentials.push(("revoked admin".into(), Some(revoked), Credential::Refused));
    let customer = Scopes::NONE.with(Scope::Customer);
    credentials.push((
        "customer A".into(),
        Some(api.token(&["customer"], Some(&user_a)).await),
        Credential::Valid(customer),
    ));
    credentials.push((
        "customer B".into(),
        Some(api.token(&["customer"], Some(&user_b)).await),
        Credential::Valid(customer),
    ));
    for scope in Scope::ALL.into_iter().filter(|s| *s != Scope::Customer) {
        let token = api.token(&[scope.as_str()], None).await;
        credentials.push((
            scope.as_str().into(),
            Some(token),
            Credential::Valid(Scopes::NONE.with(scope)),
        ));
    }
    credentials.push((
        "JWT orders:read".into(),
        Some(provider.sign(&provider.claims("openid orders:read", 300))),
        Credential::Valid(Scopes::NONE.with(Scope::OrdersRead)),
    ));
    let admin_claims = provider.claims("admin", 300);
    credentials.push((
        "JWT alg none".into(),
        Some(unsigned(&admin_claims)),
        Credential::Refused,
    ));
    credentials.push((
        "JWT HS256 with the public key".into(),
        Some(confused(&provider, &admin_claims)),
        Credential::Refused,
    ));
    let mut wrong_audience = admin_claims.clone();
    wrong_audience["aud"] = json!("someone-else");
    credentials.push((
        "JWT wrong audience".into(),
        Some(provider.sign(&wrong_audience)),
        Credential::Refused,
    ));
    credentials.push((
        "JWT expired".into(),
        Some(provider.sign(&provider.claims("admin", -120))),
        Credential::Refused,
    ));
    // The expired ordo token has expired by now.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    credentials.push(("expired admin".into(), Some(expired), Credential::Refused));

    let policy = api::auth::Policy::from_document(&api::openapi(), true);
    let mut wrong = Vec::new();
    let mut tally: BTreeMap<u16, usize> = BTreeMap::new();
    for (method, template, requirement) in policy.operations() {
        let method = method.as_str().to_owned();
        if template == "/openapi.json" || template == "/docs" {
            continue;
        }
        let path = concrete(&template, &world);
        for (name, token, credential) in &credentials {
            let client = api.client(token.as_deref());
            let answer = call(&client, &method, &path, body(&method, &template, &world)).await;
            *tally.entry(answer.status).or_default() += 1;
            let status = answer.status;
            let expected: Result<(), u16> = match credential {
                // Public routes do not read credentials at all.
                _ if requirement == Requirement::Public => Ok(()),
                Credential::Refused => Err(401),
                Credential::Valid(scopes) if !requirement.allows(*scopes) => Err(403),
                Credential::Valid(_)
                    if name == "customer B"
                        && matches!(&requirement, Requirement::AnyOf(any) if any.contains(&Scope::Customer)) =>
                {
                    // Everything a customer may reach here is A's.
                    if template == "/orders" {
                        Err(403)
                    } else {
                        Err(404)
                    }
                }
                Credential::Valid(_) => Ok(()),
            };
            let fine = match expected {
                _ if status >= 500 => false,
                Ok(()) => status != 401 && status != 403,
                Err(want) => status == want,
            };
            if status == 401 {
                let challenge = answer
                    .headers
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                let bearer = challenge.starts_with("Bearer")
                    && (token.is_none() || challenge.contains("error=\"invalid_token\""));
                if !bearer {
                    wrong.push(format!(
                        "{method} {template} as {name}: 401 with WWW-Authenticate {challenge:?}"
                    ));
                }
            }
            if !fine {
                wrong.push(format!(
                    "{method} {template} as {name}: {status}, expected {expected:?}: {}",
                    answer.body
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} wrong answers:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    // The matrix saw every kind of answer it is about.
    for status in [200, 401, 403, 404] {
        assert!(tally.contains_key(&status), "no {status} in {tally:?}");
    }
}

/// Customer B gets the same answer for A's user and order as for ones that
/// do not exist: nothing to tell them apart.
#[tokio::test]
async fn a_customer_learns_nothing_of_another_customers_data() {
    let api = Api::start().await;
    let alice = api.user("Alice").await;
    let (user_a, registered) = (alice.id(), alice.position());
    let user_b = api.user("Bob").await.id();
    let product = api.product(100, "3.00").await.id();
    let order = api
        .post(
            "/orders",
            json!({ "user_id": user_a, "lines": [{ "product_id": product, "quantity": 1 }] }),
        )
        .await
        .id();
    let bob = api.client(Some(&api.token(&["customer"], Some(&user_b)).await));
    let nobody = uuid::Uuid::now_v7().to_string();
    let shape = |answer: &Answer, id: &str| {
        let text = answer.body.to_string().replace(id, "<id>");
        (answer.status, text)
    };
    for (theirs, missing) in [
        (format!("/users/{user_a}"), format!("/users/{nobody}")),
        (
            format!("/users/{user_a}/orders"),
            format!("/users/{nobody}/orders"),
        ),
        (format!("/orders/{order}"), format!("/orders/{nobody}")),
        (
            format!("/orders/{order}?as_of=2030-01-01T00:00:00Z"),
            format!("/orders/{nobody}?as_of=2030-01-01T00:00:00Z"),
        ),
        (
            format!("/orders/{order}/timeline"),
            format!("/orders/{nobody}/timeline"),
        ),
    ] {
        let (a, b) = (bob.get(&theirs).await, bob.get(&missing).await);
        let theirs_id = if theirs.starts_with("/users") {
            &user_a
        } else {
            &order
        };
        assert_eq!(a.status, 404, "{theirs}: {a:?}");
        assert_eq!(
            shape(&a, theirs_id),
            shape(&b, &nobody),
            "{theirs} vs {missing}"
        );
    }
    for (action, body) in [("pay", json!({ "amount": "3.00" })), ("cancel", json!({}))] {
        let a = bob
            .post(&format!("/orders/{order}/{action}"), body.clone())
            .await;
        let b = bob.post(&format!("/orders/{nobody}/{action}"), body).await;
        assert_eq!(a.status, 404, "{action}: {a:?}");
        assert_eq!(shape(&a, &order), shape(&b, &nobody), "{action}");
    }
    let rename = bob
        .post(
            &format!("/users/{user_a}/rename"),
            json!({ "name": "Mallory" }),
        )
        .await;
    assert_eq!(rename.status, 404, "{rename:?}");
    let place = bob
        .post(
            "/orders",
            json!({ "user_id": user_a, "lines": [{ "product_id": product, "quantity": 1 }] }),
        )
        .await;
    common::assert_problem(&place, 403, "forbidden");
    // And nothing of A's changed.
    let alice = api
        .get_after(&format!("/users/{user_a}"), &registered)
        .await;
    assert_eq!(alice.body["name"], "Alice", "{alice:?}");
}

/// A token revoked through one API process is refused by another within
/// 2 s, though the other had it cached.
#[tokio::test]
async fn a_revocation_reaches_another_process_within_two_seconds() {
    let api = Api::start().await;
    let second = api.env.system().api().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let server = test_support::Running::spawn(|stop| api::serve(listener, second, stop));
    let token = api.token(&["ops"], None).await;
    let here = api.client(Some(&token));
    let there = Client::new(&base, Some(&token));
    // Both processes have verified (and cached) it.
    for _ in 0..3 {
        assert_eq!(here.get("/projections").await.status, 200);
        assert_eq!(there.get("/projections").await.status, 200);
    }
    let id = api::auth::TokenSecret::parse(&token).unwrap().id;
    let revoked_at = Instant::now();
    let answer = api.delete(&format!("/tokens/{id}")).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(answer.body["revoked_at"].is_string(), "{answer:?}");
    let refused = test_support::poll(
        Duration::from_secs(5),
        || there.get("/projections"),
        |answer| answer.status == 401,
    )
    .await;
    let took = revoked_at.elapsed();
    assert_eq!(refused.status, 401);
    assert!(
        took < Duration::from_secs(2),
        "the other process refused it after {took:?}"
    );
    assert_eq!(here.get("/projections").await.status, 401);
    server.stop().await.unwrap();
}

/// A caller over its rate gets 429 with the headers saying when to come
/// back; other callers are not held back.
#[tokio::test]
async fn a_caller_over_its_rate_is_told_to_wait_and_others_are_not() {
    let api = Api::start_custom(false, |s| s.auth.rate_limit = "5/s".parse().unwrap()).await;
    let fast = api.client(Some(&api.token(&["ops"], None).await));
    let other = api.client(Some(&api.token(&["ops"], None).await));
    let mut limited = None;
    for _ in 0..20 {
        let answer = fast.get("/projections").await;
        if answer.status == 429 {
            limited = Some(answer);
            break;
        }
    }
    let limited = limited.expect("never limited");
    common::assert_problem(&limited, 429, "rate_limited");
    let header = |name: &str| {
        limited
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        header("retry-after").parse::<u64>().is_ok_and(|s| s >= 1),
        "{limited:?}"
    );
    assert!(header("ratelimit-policy").contains("q=5"), "{limited:?}");
    assert!(header("ratelimit").contains("r=0"), "{limited:?}");
    assert_eq!(other.get("/projections").await.status, 200);
}

/// Every event of a journey names who caused it, and `GET /events?actor=`
/// finds exactly a caller's events.
#[tokio::test]
async fn every_event_names_its_actor_and_the_log_filters_on_it() {
    let api = Api::start_custom(true, |_| {}).await;
    let staff = api
        .token(&["users:write", "products:write", "orders:fulfil"], None)
        .await;
    let staff_actor = format!(
        "token:{}",
        api::auth::TokenSecret::parse(&staff).unwrap().id
    );
    let staff = api.client(Some(&staff));
    let user = staff
        .post(
            "/users",
            json!({ "email": "journey@example.com", "name": "J" }),
        )
        .await;
    assert_eq!(user.status, 201, "{user:?}");
    let user = user.id();
    let product = staff
        .post(
            "/products",
            json!({ "sku": "JOURNEY-1", "name": "J", "price": "4.00", "stock": 10 }),
        )
        .await
        .id();
    let customer_token = api.token(&["customer"], Some(&user)).await;
    let customer_actor = format!(
        "token:{}",
        api::auth::TokenSecret::parse(&customer_token).unwrap().id
    );
    let customer = api.client(Some(&customer_token));
    let order = customer
        .post(
            "/orders",
            json!({ "user_id": user, "lines": [{ "product_id": product, "quantity": 2 }] }),
        )
        .await;
    assert_eq!(order.status, 202, "{order:?}");
    let order = order.id();
    let settled = api.settled_order(&order).await;
    assert_eq!(settled.body["status"], "confirmed", "{settled:?}");
    let paid = customer
        .post(&format!("/orders/{order}/pay"), json!({ "amount": "8.00" }))
        .await;
    assert_eq!(paid.status, 200, "{paid:?}");
    let shipped = staff.post_empty(&format!("/orders/{order}/ship")).await;
    assert_eq!(shipped.status, 200, "{shipped:?}");

    // The saga moves the reservation out of stock once it sees the order shipped.
    let shipped_stock = test_support::poll(
        Duration::from_secs(20),
        || api.get("/events?type=StockShipped"),
        |page| {
            page.body["events"]
                .as_array()
                .is_some_and(|e| !e.is_empty())
        },
    )
    .await;
    assert_eq!(
        shipped_stock.body["events"].as_array().map(Vec::len),
        Some(1),
        "{shipped_stock:?}"
    );
    let log =
        test_support::log::whole_log(&eventstore::EventStore::new(api.env.pool.clone())).await;
    let mut by_actor: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for event in &log {
        let actor = event
            .metadata
            .actor
            .clone()
            .unwrap_or_else(|| "<none>".into());
        by_actor
            .entry(actor)
            .or_default()
            .push(format!("{} {}", event.stream_id, event.event_type));
    }
    let types = |actor: &str| {
        let mut t: Vec<String> = by_actor
            .get(actor)
            .map(|v| {
                v.iter()
                    .map(|e| e.split(' ').nth(1).unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default();
        t.sort();
        t
    };
    assert_eq!(
        types(&staff_actor),
        ["OrderShipped", "ProductCreated", "UserRegistered"],
        "{by_actor:#?}"
    );
    assert_eq!(
        types(&customer_actor),
        ["OrderPaid", "OrderPlaced"],
        "{by_actor:#?}"
    );
    assert_eq!(
        types("saga"),
        ["OrderConfirmed", "StockReserved", "StockShipped"],
        "{by_actor:#?}"
    );
    assert!(!by_actor.contains_key("<none>"), "{by_actor:#?}");

    for (actor, expected) in [(&customer_actor, 2), (&staff_actor, 3)] {
        let page = api.get(&format!("/events?actor={actor}&limit=1000")).await;
        let events = page.body["events"].as_array().unwrap();
        assert_eq!(events.len(), expected, "{actor}: {page:?}");
        assert!(
            events.iter().all(|e| e["actor"] == json!(actor)),
            "{page:?}"
        );
    }
}

/// A customer capped at 20 unpaid orders placing 21 at once gets exactly 20
/// placed; paying or cancelling one frees its place.
#[tokio::test]
async fn twenty_one_concurrent_orders_under_a_cap_of_twenty_place_exactly_twenty() {
    let api = Api::start_custom(true, |s| s.max_unpaid_orders = Some(20)).await;
    let user = api.user("Capped").await.id();
    let product = api.product(1_000_000, "1.00").await.id();
    let customer = api.client(Some(&api.token(&["customer"], Some(&user)).await));
    let body = json!({ "user_id": user, "lines": [{ "product_id": product, "quantity": 1 }] });
    let answers =
        futures::future::join_all((0..21).map(|_| customer.post("/orders", body.clone()))).await;
    let placed: Vec<&Answer> = answers.iter().filter(|a| a.status == 202).collect();
    let refused: Vec<&Answer> = answers.iter().filter(|a| a.status != 202).collect();
    assert_eq!((placed.len(), refused.len()), (20, 1), "{answers:?}");
    common::assert_problem(refused[0], 409, "too_many_unpaid_orders");
    // Still full.
    common::assert_problem(
        &customer.post("/orders", body.clone()).await,
        409,
        "too_many_unpaid_orders",
    );

    // Paid: its place is free again.
    let first = placed[0].id();
    let settled = api.settled_order(&first).await;
    assert_eq!(settled.body["status"], "confirmed", "{settled:?}");
    let paid = customer
        .post(&format!("/orders/{first}/pay"), json!({ "amount": "1.00" }))
        .await;
    assert_eq!(paid.status, 200, "{paid:?}");
    let again = customer.post("/orders", body.clone()).await;
    assert_eq!(again.status, 202, "{again:?}");
    common::assert_problem(
        &customer.post("/orders", body.clone()).await,
        409,
        "too_many_unpaid_orders",
    );

    // Cancelled: the same.
    let second = placed[1].id();
    assert_eq!(api.settled_order(&second).await.body["status"], "confirmed");
    let cancelled = customer
        .post(&format!("/orders/{second}/cancel"), json!({}))
        .await;
    assert_eq!(cancelled.status, 200, "{cancelled:?}");
    assert_eq!(customer.post("/orders", body.clone()).await.status, 202);

    // Another user is not held back by this one's orders.
    let other = api.user("Other").await.id();
    let other_body =
        json!({ "user_id": other, "lines": [{ "product_id": product, "quantity": 1 }] });
    assert_eq!(api.post("/orders", other_body).await.status, 202);
}

/// Keys can come from the provider's URL (plain http only to a loopback
/// address, as here; https elsewhere): the verifier reads the set there.
#[tokio::test]
async fn keys_are_read_from_the_providers_url() {
    let provider = Provider::new();
    let set = std::fs::read_to_string(&provider.jwks).unwrap();
    let app = axum::Router::new().route(
        "/certs",
        axum::routing::get(move || {
            let set = set.clone();
            async move { ([("content-type", "application/json")], set) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/certs", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let mut config = provider.config();
    config.jwks = JwksSource::parse(&url).unwrap();
    let verifier = api::auth::jwt::JwtVerifier::new(config).await.unwrap();
    let caller = verifier
        .verify(&provider.sign(&provider.claims("orders:read", 60)))
        .await
        .unwrap();
    assert_eq!(caller.actor.to_string(), format!("jwt:{ISSUER}#alice"));
    assert!(caller.scopes.contains(Scope::OrdersRead));
    // A URL that answers no key set stops the start with a clear error.
    let mut broken = provider.config();
    broken.jwks = JwksSource::parse(&url.replace("/certs", "/nothing")).unwrap();
    let error = api::auth::jwt::JwtVerifier::new(broken).await.unwrap_err();
    assert!(error.to_string().contains("404"), "{error}");
    server.abort();
}
