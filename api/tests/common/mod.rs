//! An ordo API on a real socket, with the relay and projectors behind it.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

use projectors::{Projection, Projector, ProjectorConfig};
use reqwest::header::HeaderMap;
use serde_json::Value;
use test_support::shop::{spawn_relay, RunningRelay, Shop};
use test_support::TestEnv;
use tokio_util::sync::CancellationToken;

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

pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
    pub shop: Shop,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    pub relay: RunningRelay,
    pub env: TestEnv,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.stop.cancel();
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Api {
    /// API, relay and projectors on `env`.
    pub async fn start_on(env: TestEnv, pool: deadpool_postgres::Pool) -> Api {
        Self::start_with(env, pool, false).await
    }

    /// API, relay, projectors and the fulfilment saga.
    pub async fn start_with_saga() -> Api {
        let env = TestEnv::new().await;
        let pool = env.pool.clone();
        Self::start_with(env, pool, true).await
    }

    async fn start_with(env: TestEnv, pool: deadpool_postgres::Pool, saga: bool) -> Api {
        let shop = Shop::new(&env);
        let relay = spawn_relay(&env, &shop.store);
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        for projection in Projection::ALL {
            let projector = Projector::new(
                projection,
                env.pool.clone(),
                env.database_url.clone(),
                env.jetstream.clone(),
                ProjectorConfig::new(env.stream.clone(), env.prefix.clone()),
            );
            let token = stop.clone();
            tasks.push(tokio::spawn(async move {
                let _ = projector.run(token).await;
            }));
        }
        if saga {
            let config = sagas::RunnerConfig::new(
                env.stream.clone(),
                env.prefix.clone(),
                Duration::from_secs(3600),
            );
            let runner = sagas::SagaRunner::new(
                eventstore::executor::Executor::new(eventstore::EventStore::new(env.pool.clone())),
                env.database_url.clone(),
                env.jetstream.clone(),
                config,
            )
            .expect("a saga runner");
            let token = stop.clone();
            tasks.push(tokio::spawn(async move {
                let _ = runner.run(token).await;
            }));
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = api::AppState::new(pool, env.nats.clone());
        let token = stop.clone();
        tasks.push(tokio::spawn(async move {
            api::serve(listener, state, token).await.unwrap();
        }));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Api {
            base,
            http,
            shop,
            stop,
            tasks,
            relay,
            env,
        }
    }

    pub async fn start() -> Api {
        let env = TestEnv::new().await;
        let pool = env.pool.clone();
        Api::start_on(env, pool).await
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
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let order = self.get(&format!("/orders/{id}")).await;
            if (order.status == 200 && order.body["status"] != "pending")
                || std::time::Instant::now() > deadline
            {
                return order;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
