//! An ordo API on a real socket, with the relay and projectors behind it.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

use api::auth::tokens::NewToken;
use api::auth::Scope;
use projectors::Projection;
use reqwest::header::HeaderMap;
use serde_json::Value;
use test_support::shop::{spawn_relay_of, RunningRelay, Shop};
use test_support::{Running, TestEnv};

pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub headers: HeaderMap,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.body)
    }
}

impl Answer {
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or_default()
    }

    pub fn position(&self) -> String {
        self.body["position"].as_str().unwrap().to_owned()
    }

    pub fn id(&self) -> String {
        self.body["id"].as_str().unwrap().to_owned()
    }
}

/// Requests as one caller.
#[derive(Clone)]
pub struct Client {
    pub base: String,
    /// Sends the caller's token with every request (none: anonymous).
    pub http: reqwest::Client,
}

pub struct Api {
    /// Requests as an admin.
    pub admin: Client,
    /// The admin token's secret.
    pub admin_token: String,
    pub shop: Shop,
    /// The API, projectors and (when asked for) the saga coordinator.
    roles: Vec<Running<()>>,
    pub relay: RunningRelay,
    pub env: TestEnv,
}

impl Api {
    /// API, relay and projectors on `env`, the API's own connections going
    /// to `api_database` (the same database, through a proxy the test cuts).
    pub async fn start_on(env: TestEnv, api_database: eventstore::DatabaseUrl) -> Api {
        let mut settings = env.settings();
        settings.database_url = api_database;
        Self::start_with(env, settings, false).await
    }

    /// API, relay, projectors and the fulfilment saga.
    pub async fn start_with_saga() -> Api {
        let env = TestEnv::new().await;
        let settings = env.settings();
        Self::start_with(env, settings, true).await
    }

    /// API, relay, projectors and the saga, every one of them connected as
    /// `settings` says (a runtime role's login, say).
    pub async fn start_as(env: TestEnv, settings: system::Settings) -> Api {
        Self::start_split(env, settings.clone(), settings, true).await
    }

    async fn start_with(env: TestEnv, api_settings: system::Settings, saga: bool) -> Api {
        let settings = env.settings();
        Self::start_split(env, settings, api_settings, saga).await
    }

    async fn start_split(
        env: TestEnv,
        settings: system::Settings,
        api_settings: system::Settings,
        saga: bool,
    ) -> Api {
        let shop = Shop::new(&env);
        let system = env.system_with(settings);
        let relay = spawn_relay_of(
            &system,
            eventstore::relay::RelayConfig::new(
                system.settings().stream.clone(),
                system.settings().prefix.clone(),
            ),
        );
        let mut roles = Vec::new();
        for projection in Projection::ALL {
            let projector = system.projector(projection).unwrap();
            roles.push(Running::spawn(|stop| async move {
                let _ = projector.run(stop).await;
            }));
        }
        let state = env.system_with(api_settings).api().await.unwrap();
        if saga {
            let mut config = system.saga_config();
            config.payment_timeout = Duration::from_secs(3600);
            let runner = system.saga_with(config, Some(&state.executor)).unwrap();
            roles.push(Running::spawn(|stop| async move {
                let _ = runner.run(stop).await;
            }));
        }
        let admin_token = token(&state, &[Scope::Admin], None).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        roles.push(Running::spawn(|stop| async move {
            api::serve(listener, state, stop).await.unwrap();
        }));
        Api {
            admin: Client::new(&base, Some(&admin_token)),
            admin_token,
            shop,
            roles,
            relay,
            env,
        }
    }

    /// API, relay and projectors (and the saga with `saga`), the API's
    /// settings changed by `configure`.
    pub async fn start_custom(saga: bool, configure: impl FnOnce(&mut system::Settings)) -> Api {
        let env = TestEnv::new().await;
        let mut settings = env.settings();
        configure(&mut settings);
        Api::start_with(env, settings, saga).await
    }

    pub async fn start() -> Api {
        let env = TestEnv::new().await;
        let settings = env.settings();
        Api::start_with(env, settings, false).await
    }

    /// The text of `/metrics`, as the admin sees it.
    pub async fn metrics(&self) -> String {
        self.admin
            .http
            .get(format!("{}/metrics", self.admin.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Requests with `token` (none: anonymous).
    pub fn client(&self, token: Option<&str>) -> Client {
        Client::new(&self.admin.base, token)
    }

    /// A new token of `scopes` (bound to `user` for a customer), made
    /// through the API as the admin; its secret.
    pub async fn token(&self, scopes: &[&str], user: Option<&str>) -> String {
        let answer = self
            .post(
                "/tokens",
                serde_json::json!({ "scopes": scopes, "user_id": user, "name": "test" }),
            )
            .await;
        assert_eq!(answer.status, 201, "{answer:?}");
        answer.body["token"].as_str().unwrap().to_owned()
    }
}

impl std::ops::Deref for Api {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.admin
    }
}

/// A token made straight in the store behind `state`.
pub async fn token(state: &api::AppState, scopes: &[Scope], user: Option<uuid::Uuid>) -> String {
    let store = api::auth::TokenStore::new(state.pool.clone());
    let (_, secret) = store
        .create(&NewToken {
            name: "test".into(),
            scopes: scopes.iter().copied().collect(),
            user_id: user,
            expires_in: None,
            created_by: "system".into(),
        })
        .await
        .unwrap();
    secret.expose()
}

impl Client {
    pub fn new(base: &str, token: Option<&str>) -> Client {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            headers.insert(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {token}").parse().unwrap(),
            );
        }
        Client {
            base: base.to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .default_headers(headers)
                .build()
                .unwrap(),
        }
    }

    async fn answer(response: reqwest::Response) -> Answer {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Answer {
            status,
            body,
            headers,
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        Self::answer(
            self.http
                .post(format!("{}{path}", self.base))
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn post_with_key(&self, path: &str, key: &str, body: Value) -> Answer {
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("Idempotency-Key", key)
            .json(&body);
        Self::answer(request.send().await.unwrap()).await
    }

    pub async fn post_raw(&self, path: &str, content_type: Option<&str>, body: Vec<u8>) -> Answer {
        let mut request = self.http.post(format!("{}{path}", self.base)).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        Self::answer(request.send().await.unwrap()).await
    }

    pub async fn post_empty(&self, path: &str) -> Answer {
        Self::answer(
            self.http
                .post(format!("{}{path}", self.base))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        Self::answer(
            self.http
                .delete(format!("{}{path}", self.base))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Answer {
        Self::answer(
            self.http
                .get(format!("{}{path}", self.base))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// GET after the write at `position` is applied.
    pub async fn get_after(&self, path: &str, position: &str) -> Answer {
        let separator = if path.contains('?') { '&' } else { '?' };
        self.get(&format!("{path}{separator}min_position={position}"))
            .await
    }

    pub async fn user(&self, name: &str) -> Answer {
        let email = format!("{}@example.com", uuid::Uuid::new_v4().simple());
        let answer = self
            .post(
                "/users",
                serde_json::json!({ "email": email, "name": name }),
            )
            .await;
        assert_eq!(answer.status, 201, "{answer:?}");
        answer
    }

    /// Polls an order until its status is no longer `pending`.
    pub async fn settled_order(&self, id: &str) -> Answer {
        let path = format!("/orders/{id}");
        test_support::poll(
            Duration::from_secs(20),
            || self.get(&path),
            |order| order.status == 200 && order.body["status"] != "pending",
        )
        .await
    }

    pub async fn product(&self, stock: u32, price: &str) -> Answer {
        let sku = format!("SKU-{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let answer = self
            .post(
                "/products",
                serde_json::json!({ "sku": sku, "name": "Widget", "price": price, "stock": stock }),
            )
            .await;
        assert_eq!(answer.status, 201, "{answer:?}");
        answer
    }
}

/// Asserts a problem+json answer.
pub fn assert_problem(answer: &Answer, status: u16, code: &str) {
    assert_eq!((answer.status, answer.code()), (status, code), "{answer:?}");
    assert_eq!(
        answer
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/problem+json"),
        "{answer:?}"
    );
    for field in ["type", "title", "status", "detail", "code"] {
        assert!(
            answer.body.get(field).is_some(),
            "problem has {field}: {answer:?}"
        );
    }
}
