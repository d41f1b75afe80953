//! `ordo bench place-orders`: end-to-end load through the HTTP API of a
//! running ordo.
//!
//! It seeds users and products (a tenth of them scarce, so orders compete for
//! stock and some are rejected), then `concurrency` clients place orders of
//! one to three lines for `duration`. A tailer follows `GET /events` to see
//! each order confirmed or rejected; some confirmed orders are then paid and
//! some cancelled, as real customers would. A watcher asks
//! `GET /projections/orders?min_position=`: an order counts as "confirmed,
//! visible" when the orders read model has applied its confirmation. Only
//! HTTP is used.
//!
//! It keeps going when the API goes away or answers 5xx (killed, restarting,
//! waiting for PostgreSQL or NATS): such answers are counted as errors by
//! kind, and the client backs off a little and carries on. Seeding retries
//! each create with the same client-chosen id, which the API treats as a
//! retry. With `--acked FILE`, every 2xx command answer is appended to FILE
//! as one JSON line, so `scripts/chaos` can prove that nothing acknowledged
//! was lost.
//!
//! With an admin token (`--token` / `ORDO_TOKEN`) it acts as a shop would:
//! it makes a staff token (users, products, orders, the event log,
//! projections) for seeding, watching, paying and cancelling, and a
//! customer token for each user it seeds, with which that user's orders are
//! placed. Without one, it sends no token (an ordo with `ORDO_AUTH=off`).
//! Run the ordo it measures with `ORDO_RATE_LIMIT=off` (or above the load)
//! and `ORDO_MAX_UNPAID_ORDERS=off` (it leaves many orders of each user
//! unpaid), so that it measures the work of an order, not the limits.

use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use eventstore::Position;
use hdrhistogram::Histogram;
use rand::prelude::*;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::{latency_fields, line, new_histogram, rate, record};

/// What a run measures.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long orders are placed.
    pub duration: Duration,
    /// Concurrent clients.
    pub concurrency: usize,
    /// Users to seed.
    pub users: usize,
    /// Products to seed.
    pub products: usize,
    /// Base URL of the API.
    pub url: String,
    /// How long to wait for the last orders to settle after placing stops.
    pub drain: Duration,
    /// Where to append the acknowledged commands, if anywhere.
    pub acked: Option<std::path::PathBuf>,
    /// An admin token, to make the staff and customer tokens the run uses.
    pub token: Option<String>,
}

/// The scopes of the staff token the benchmark seeds, watches, pays and
/// cancels with.
const STAFF_SCOPES: [&str; 6] = [
    "users:write",
    "products:write",
    "orders:read",
    "orders:write",
    "events:read",
    "ops",
];

/// Units a scarce product starts with.
const SCARCE_STOCK: u32 = 20;
/// Units a plentiful product starts with (the domain's maximum).
const PLENTY: u32 = 1_000_000;
/// How long a client waits after the API did not answer or answered 5xx
/// (down, restarting, or waiting for PostgreSQL or NATS): long enough not to
/// spin on a refused connection, short enough to notice it is back.
const BACKOFF: Duration = Duration::from_millis(200);
/// How long seeding keeps retrying one create before it gives up.
const SEED_PATIENCE: Duration = Duration::from_secs(120);

/// The file of `--acked`: one JSON line per acknowledged (2xx) command.
///
/// Each line is written with a single `write` on a file opened for appending,
/// without buffering, so a line is complete and on its way to disk as soon as
/// the answer arrived, whatever happens to this process afterwards.
struct AckLog {
    path: std::path::PathBuf,
    file: Mutex<std::fs::File>,
    /// The first write that failed: the run then fails, as its record of
    /// acknowledged commands is incomplete.
    failed: Mutex<Option<String>>,
}

impl AckLog {
    fn create(path: &std::path::Path) -> anyhow::Result<AckLog> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {} for --acked", path.display()))?;
        Ok(AckLog {
            path: path.to_owned(),
            file: Mutex::new(file),
            failed: Mutex::new(None),
        })
    }

    /// Records a command answer `{"id","version","position"}` of a stream
    /// of type `stream_type` (`user`, `product`, `order`).
    fn record(&self, kind: &str, stream_type: &str, status: u16, answer: &Value) {
        use std::io::Write as _;
        let line = ack_line(kind, stream_type, status, answer);
        let written = lock(&self.file).write_all(line.as_bytes());
        if let Err(e) = written {
            lock(&self.failed).get_or_insert_with(|| format!("{e}"));
        }
    }

    fn finish(&self) -> anyhow::Result<()> {
        if let Some(e) = lock(&self.failed).take() {
            anyhow::bail!(
                "writing acknowledged commands to {} failed: {e}; the file is incomplete",
                self.path.display()
            );
        }
        Ok(())
    }
}

/// One line of the `--acked` file, newline included.
fn ack_line(kind: &str, stream_type: &str, status: u16, answer: &Value) -> String {
    let id = answer["id"].as_str().unwrap_or_default();
    let mut line = json!({
        "kind": kind,
        "status": status,
        "stream_id": format!("{stream_type}-{id}"),
        "version": answer["version"],
        "position": answer["position"],
    })
    .to_string();
    line.push('\n');
    line
}

#[derive(Debug)]
struct Placed {
    at: Instant,
    units: u32,
}

/// One second of the run.
#[derive(Debug, Default, Clone)]
struct Second {
    placed: u64,
    confirmed: u64,
    post: Option<Histogram<u64>>,
    visible: Option<Histogram<u64>>,
}

#[derive(Debug, Default)]
struct Tally {
    accepted: u64,
    confirmed: u64,
    rejected: u64,
    paid: u64,
    cancelled: u64,
    errors: BTreeMap<String, u64>,
    post_latency: Option<Histogram<u64>>,
    visible_latency: Option<Histogram<u64>>,
    seconds: Vec<Second>,
    max_lag_seconds: f64,
}

impl Tally {
    fn second(&mut self, started: Instant) -> &mut Second {
        let index = started.elapsed().as_secs() as usize;
        if self.seconds.len() <= index {
            self.seconds.resize(index + 1, Second::default());
        }
        &mut self.seconds[index]
    }

    fn error(&mut self, kind: String) {
        *self.errors.entry(kind).or_insert(0) += 1;
    }
}

struct Shared {
    http: reqwest::Client,
    base: String,
    users: Vec<Uuid>,
    /// Each user's customer token (none without `--token`).
    customer_tokens: Vec<Option<String>>,
    plentiful: Vec<Uuid>,
    scarce: Vec<Uuid>,
    started: Instant,
    placing: AtomicBool,
    acks: Option<Arc<AckLog>>,
    placed: Mutex<HashMap<Uuid, Placed>>,
    /// Confirmations not yet visible in the read model: (position, order).
    waiting: Mutex<BinaryHeap<std::cmp::Reverse<(Position, Uuid)>>>,
    /// When each confirmed order was placed, until it becomes visible.
    confirmed_placed_at: Mutex<HashMap<Uuid, Instant>>,
    /// Wakes the projection watcher when `waiting` was empty.
    confirmations: tokio::sync::Notify,
    tally: Mutex<Tally>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs the benchmark.
pub async fn run(settings: Settings, json_path: Option<&std::path::Path>) -> anyhow::Result<()> {
    anyhow::ensure!(
        settings.concurrency > 0 && settings.users > 0 && settings.products > 0,
        "concurrency, users and products must be at least 1"
    );
    let acks = match &settings.acked {
        Some(path) => Some(Arc::new(AckLog::create(path)?)),
        None => None,
    };
    let base = settings.url.trim_end_matches('/').to_owned();
    let http_client = |token: Option<&str>| -> anyhow::Result<reqwest::Client> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            let value = format!("Bearer {token}")
                .parse()
                .context("the token holds characters no header may carry")?;
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        Ok(reqwest::Client::builder()
            .pool_max_idle_per_host(settings.concurrency + 8)
            .timeout(Duration::from_secs(30))
            .default_headers(headers)
            .build()?)
    };
    let admin = http_client(settings.token.as_deref())?;
    admin
        .get(format!("{base}/health"))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| {
            format!("cannot reach ordo at {base}; start it (scripts/up) or pass --url")
        })?;
    let staff = match &settings.token {
        Some(_) => Some(make_token(&admin, &base, &STAFF_SCOPES, None).await?),
        None => None,
    };
    let http = http_client(staff.as_deref())?;

    println!(
        "seeding {} users and {} products ...",
        settings.users, settings.products
    );
    let seeder = Seeder {
        http: &http,
        base: &base,
        concurrency: settings.concurrency,
        acks: acks.as_deref(),
    };
    let users = seeder
        .seed(settings.users, "user", |i| {
            json!({ "email": format!("bench-{}-{i}@example.com", Uuid::new_v4().simple()), "name": format!("Bench user {i}") })
        })
        .await?;
    let customer_tokens = match &settings.token {
        Some(_) => {
            use futures::StreamExt as _;
            let made: Vec<anyhow::Result<String>> = futures::stream::iter(users.iter())
                .map(|user| make_token(&admin, &base, &["customer"], Some(*user)))
                .buffered(settings.concurrency.clamp(1, 16))
                .collect()
                .await;
            made.into_iter()
                .map(|token| token.map(Some))
                .collect::<anyhow::Result<Vec<_>>>()?
        }
        None => vec![None; users.len()],
    };
    let scarce_count = (settings.products / 10).max(1);
    let products = seeder
        .seed(settings.products, "product", |i| {
            let stock = if i < scarce_count { SCARCE_STOCK } else { PLENTY };
            json!({ "sku": format!("B{}-{i}", &Uuid::new_v4().simple().to_string()[..10]), "name": "Bench product", "price": "10.00", "stock": stock })
        })
        .await?;
    let (scarce, plentiful) = products.split_at(scarce_count.min(products.len()));
    let cursor = current_log_position(&http, &base).await?;

    let shared = Arc::new(Shared {
        http,
        base,
        users,
        customer_tokens,
        plentiful: if plentiful.is_empty() {
            scarce.to_vec()
        } else {
            plentiful.to_vec()
        },
        scarce: scarce.to_vec(),
        started: Instant::now(),
        placing: AtomicBool::new(true),
        acks: acks.clone(),
        placed: Mutex::new(HashMap::new()),
        waiting: Mutex::new(BinaryHeap::new()),
        confirmed_placed_at: Mutex::new(HashMap::new()),
        confirmations: tokio::sync::Notify::new(),
        tally: Mutex::new(Tally::default()),
    });
    println!(
        "placing orders for {:?} from {} clients against {} ...",
        settings.duration, settings.concurrency, shared.base
    );
    let stop_watching = Arc::new(AtomicBool::new(false));
    let tailer = tokio::spawn(tail(shared.clone(), cursor, stop_watching.clone()));
    let poller = tokio::spawn(watch_projection(shared.clone(), stop_watching.clone()));
    let mut clients = Vec::new();
    for seed in 0..settings.concurrency {
        clients.push(tokio::spawn(client(
            shared.clone(),
            settings.duration,
            seed as u64,
        )));
    }
    for client in clients {
        client.await?;
    }
    shared.placing.store(false, Ordering::SeqCst);
    let placing_took = shared.started.elapsed();
    // Let the orders placed last settle.
    let drain_deadline = Instant::now() + settings.drain;
    while Instant::now() < drain_deadline {
        let outstanding = lock(&shared.placed).len() + lock(&shared.waiting).len();
        if outstanding == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop_watching.store(true, Ordering::SeqCst);
    tailer.await??;
    poller.await??;
    let unsettled = lock(&shared.placed).len();

    let tally = std::mem::take(&mut *lock(&shared.tally));
    report(&settings, &tally, placing_took, unsettled, json_path)?;
    if let Some(acks) = &acks {
        acks.finish()?;
    }
    Ok(())
}

/// A token of `scopes` (a customer's, for `user`), made with the admin
/// client through `POST /tokens`; it lives a day.
async fn make_token(
    admin: &reqwest::Client,
    base: &str,
    scopes: &[&str],
    user: Option<Uuid>,
) -> anyhow::Result<String> {
    let response = admin
        .post(format!("{base}/tokens"))
        .json(&json!({ "scopes": scopes, "user_id": user, "name": "bench", "expires_in": "1d" }))
        .send()
        .await
        .with_context(|| format!("POST {base}/tokens"))?;
    let status = response.status();
    let answer: Value = response.json().await.unwrap_or(Value::Null);
    match answer["token"].as_str() {
        Some(token) if status.is_success() => Ok(token.to_owned()),
        _ => anyhow::bail!(
            "making a token answered {status}: {answer}; --token / ORDO_TOKEN must be an admin token"
        ),
    }
}

/// Creates the users and products the orders need.
struct Seeder<'a> {
    http: &'a reqwest::Client,
    base: &'a str,
    concurrency: usize,
    acks: Option<&'a AckLog>,
}

impl Seeder<'_> {
    /// Creates `count` resources of `stream_type` (`user`, `product`) through
    /// `POST /<stream_type>s`; returns their ids.
    async fn seed(
        &self,
        count: usize,
        stream_type: &str,
        body: impl Fn(usize) -> Value,
    ) -> anyhow::Result<Vec<Uuid>> {
        use futures::StreamExt as _;
        let bodies: Vec<Value> = (0..count).map(body).collect();
        let results: Vec<anyhow::Result<Uuid>> = futures::stream::iter(bodies)
            .map(|body| self.create(stream_type, body))
            .buffered(self.concurrency.max(1))
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// One create, under a client-chosen id so that repeating it after a
    /// lost answer or a 5xx is a retry, not a second resource.
    async fn create(&self, stream_type: &str, mut body: Value) -> anyhow::Result<Uuid> {
        let id = Uuid::new_v4();
        body["id"] = json!(id);
        let path = format!("/{stream_type}s");
        let deadline = Instant::now() + SEED_PATIENCE;
        loop {
            let outcome = self
                .http
                .post(format!("{}{path}", self.base))
                .json(&body)
                .send()
                .await;
            let why = match outcome {
                Ok(response) => {
                    let status = response.status();
                    match response.json::<Value>().await {
                        Ok(answer) if status.is_success() => {
                            if let Some(acks) = self.acks {
                                acks.record(
                                    &format!("{stream_type}.create"),
                                    stream_type,
                                    status.as_u16(),
                                    &answer,
                                );
                            }
                            return Ok(id);
                        }
                        Ok(answer) if !status.is_server_error() => {
                            anyhow::bail!("seeding {path} answered {status}: {answer}")
                        }
                        Ok(answer) => format!("{status}: {answer}"),
                        Err(e) => format!("{status}, and reading the answer failed: {e}"),
                    }
                }
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                anyhow::bail!("seeding {path} failed for {SEED_PATIENCE:?}; last: {why}");
            }
            tokio::time::sleep(BACKOFF).await;
        }
    }
}

async fn current_log_position(http: &reqwest::Client, base: &str) -> anyhow::Result<String> {
    // Page to the end of the log: the tailer starts after it.
    let mut after = String::from("0.0");
    let deadline = Instant::now() + SEED_PATIENCE;
    loop {
        let page: Value = match http
            .get(format!("{base}/events?after={after}&limit=1000"))
            .send()
            .await
        {
            Ok(response) => response.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        let Some(next) = page["next"].as_str().map(str::to_owned) else {
            // Not an answer from a healthy API (down or 5xx): try again.
            anyhow::ensure!(
                Instant::now() < deadline,
                "GET {base}/events kept failing for {SEED_PATIENCE:?}; last answer: {page}"
            );
            tokio::time::sleep(BACKOFF).await;
            continue;
        };
        let empty = page["events"].as_array().is_none_or(Vec::is_empty);
        after = next;
        if empty {
            return Ok(after);
        }
    }
}

/// One client placing orders until the time is up.
async fn client(shared: Arc<Shared>, duration: Duration, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    while shared.started.elapsed() < duration {
        let which = rng.random_range(0..shared.users.len());
        let user = shared.users[which];
        let count = rng.random_range(1..=3usize);
        let mut lines: Vec<(Uuid, u32)> = Vec::with_capacity(count);
        while lines.len() < count {
            let pool = if rng.random_bool(0.1) {
                &shared.scarce
            } else {
                &shared.plentiful
            };
            let product = pool[rng.random_range(0..pool.len())];
            if lines.iter().all(|(p, _)| *p != product) {
                lines.push((product, rng.random_range(1..=3)));
            }
        }
        let body = json!({
            "user_id": user,
            "lines": lines.iter().map(|(p, q)| json!({ "product_id": p, "quantity": q })).collect::<Vec<_>>(),
        });
        let started = Instant::now();
        let mut request = shared
            .http
            .post(format!("{}/orders", shared.base))
            .json(&body);
        if let Some(token) = &shared.customer_tokens[which] {
            request = request.bearer_auth(token);
        }
        let outcome = request.send().await;
        let elapsed = started.elapsed();
        match outcome {
            Ok(response) if response.status().as_u16() == 202 => {
                // No complete answer (the API died while sending it): not
                // acknowledged.
                let Ok(answer) = response.json::<Value>().await else {
                    lock(&shared.tally).error("202 without a readable answer".into());
                    continue;
                };
                let Some(id) = answer["id"].as_str().and_then(|s| s.parse::<Uuid>().ok()) else {
                    lock(&shared.tally).error("202 without an order id".into());
                    continue;
                };
                if let Some(acks) = &shared.acks {
                    acks.record("order.place", "order", 202, &answer);
                }
                let units = lines.iter().map(|(_, q)| q).sum();
                lock(&shared.placed).insert(id, Placed { at: started, units });
                let mut tally = lock(&shared.tally);
                tally.accepted += 1;
                record(
                    tally.post_latency.get_or_insert_with(new_histogram),
                    elapsed,
                );
                let second = tally.second(shared.started);
                second.placed += 1;
                record(second.post.get_or_insert_with(new_histogram), elapsed);
            }
            Ok(response) => {
                let status = response.status().as_u16();
                let code = response
                    .json::<Value>()
                    .await
                    .ok()
                    .and_then(|v| v["code"].as_str().map(str::to_owned));
                lock(&shared.tally).error(format!("{status} {}", code.unwrap_or_default()));
                if status >= 500 {
                    tokio::time::sleep(jitter(&mut rng, BACKOFF)).await;
                }
            }
            Err(e) => {
                lock(&shared.tally).error(if e.is_timeout() {
                    "timeout".into()
                } else {
                    "connection".into()
                });
                tokio::time::sleep(jitter(&mut rng, BACKOFF)).await;
            }
        }
    }
}

/// `base` plus up to half of it again, so that clients do not retry in step.
fn jitter(rng: &mut StdRng, base: Duration) -> Duration {
    base + base.mul_f64(rng.random::<f64>() / 2.0)
}

/// Follows the order events of the log: confirmations and rejections.
async fn tail(shared: Arc<Shared>, mut after: String, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(7);
    while !stop.load(Ordering::SeqCst) {
        let url = format!(
            "{}/events?after={after}&stream_type=order&limit=1000",
            shared.base
        );
        let page: Value = match shared.http.get(&url).send().await {
            Ok(response) => response.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        let Some(events) = page["events"].as_array() else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        if let Some(next) = page["next"].as_str() {
            after = next.to_owned();
        }
        for event in events {
            let kind = event["type"].as_str().unwrap_or_default();
            if kind != "OrderConfirmed" && kind != "OrderRejected" {
                continue;
            }
            let Some(id) = event["subject"]
                .as_str()
                .and_then(|s| s.strip_prefix("order-"))
                .and_then(|s| s.parse::<Uuid>().ok())
            else {
                continue;
            };
            let Some(position) = event["position"]
                .as_str()
                .and_then(|p| p.parse::<Position>().ok())
            else {
                continue;
            };
            let placed = lock(&shared.placed).remove(&id);
            let Some(placed) = placed else { continue };
            if kind == "OrderRejected" {
                lock(&shared.tally).rejected += 1;
                continue;
            }
            {
                let mut tally = lock(&shared.tally);
                tally.confirmed += 1;
                tally.second(shared.started).confirmed += 1;
            }
            lock(&shared.confirmed_placed_at).insert(id, placed.at);
            lock(&shared.waiting).push(std::cmp::Reverse((position, id)));
            shared.confirmations.notify_one();
            // What customers do next: some pay, some cancel.
            let roll: f64 = rng.random();
            if shared.placing.load(Ordering::SeqCst) && roll < 0.4 {
                let shared = shared.clone();
                let pay = roll < 0.3;
                let amount = format!("{}.00", placed.units * 10);
                tokio::spawn(async move {
                    let (path, body) = if pay {
                        (format!("/orders/{id}/pay"), json!({ "amount": amount }))
                    } else {
                        (format!("/orders/{id}/cancel"), json!({ "reason": "bench" }))
                    };
                    let answer = match shared
                        .http
                        .post(format!("{}{path}", shared.base))
                        .json(&body)
                        .send()
                        .await
                    {
                        Ok(r) if r.status().is_success() => {
                            let status = r.status().as_u16();
                            r.json::<Value>().await.ok().map(|answer| (status, answer))
                        }
                        _ => None,
                    };
                    let ok = answer.is_some();
                    if let (Some(acks), Some((status, answer))) = (&shared.acks, &answer) {
                        let kind = if pay { "order.pay" } else { "order.cancel" };
                        acks.record(kind, "order", *status, answer);
                    }
                    let mut tally = lock(&shared.tally);
                    match (ok, pay) {
                        (true, true) => tally.paid += 1,
                        (true, false) => tally.cancelled += 1,
                        (false, _) => tally.error(if pay {
                            "pay failed".into()
                        } else {
                            "cancel failed".into()
                        }),
                    }
                });
            }
        }
        if events.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    Ok(())
}

/// Watches the orders projection: a confirmation is visible once it has
/// applied it (the checkpoint moves in the transaction that writes the read
/// model, so the two are one and the same).
///
/// It asks `GET /projections/orders?min_position=<earliest confirmation not
/// yet seen visible>`, one question at a time. The server answers as soon as
/// the projection has applied that position (its watcher reads checkpoints
/// every 2 ms) with the position applied through, which often covers later
/// confirmations too. So a confirmation is seen within a round trip of the
/// projection applying it, at the cost of one small request per projection
/// commit. Polling the whole `/projections` list instead saw confirmations
/// late under load (the list counts every projection's lag, and the pause
/// between polls adds to it; docs/BENCHMARKS.md has the figures).
async fn watch_projection(shared: Arc<Shared>, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    while !stop.load(Ordering::SeqCst) {
        let earliest = lock(&shared.waiting).peek().map(|entry| entry.0 .0);
        let Some(earliest) = earliest else {
            tokio::select! {
                _ = shared.confirmations.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
            continue;
        };
        let answer = shared
            .http
            .get(format!(
                "{}/projections/orders?min_position={earliest}",
                shared.base
            ))
            .send()
            .await;
        let status: Value = match answer {
            Ok(response) if response.status().is_success() => {
                response.json().await.unwrap_or(Value::Null)
            }
            // 503 `projection_lagging`: five seconds passed; ask again.
            Ok(response) if response.status().as_u16() == 503 => continue,
            _ => Value::Null,
        };
        let Some(applied) = status["position"]
            .as_str()
            .and_then(|p| p.parse::<Position>().ok())
        else {
            // The API is away: do not spin.
            tokio::time::sleep(BACKOFF).await;
            continue;
        };
        let now = Instant::now();
        let mut visible = Vec::new();
        {
            let mut waiting = lock(&shared.waiting);
            while let Some(std::cmp::Reverse((position, id))) = waiting.peek().copied() {
                if position > applied {
                    break;
                }
                waiting.pop();
                visible.push(id);
            }
        }
        let mut tally = lock(&shared.tally);
        let lag = status["lag_seconds"].as_f64().unwrap_or(0.0);
        tally.max_lag_seconds = tally.max_lag_seconds.max(lag);
        for id in visible {
            if let Some(at) = lock(&shared.confirmed_placed_at).remove(&id) {
                let latency = now - at;
                record(
                    tally.visible_latency.get_or_insert_with(new_histogram),
                    latency,
                );
                let second = tally.second(shared.started);
                record(second.visible.get_or_insert_with(new_histogram), latency);
            }
        }
    }
    Ok(())
}

fn ms(histogram: &Option<Histogram<u64>>, quantile: f64) -> f64 {
    histogram
        .as_ref()
        .map_or(0.0, |h| h.value_at_quantile(quantile) as f64 / 1000.0)
}

/// "p50 / p90 / p99 / max ms" of a latency histogram (zeros when empty).
fn quantiles(histogram: &Option<Histogram<u64>>) -> String {
    format!(
        "{:.1} / {:.1} / {:.1} / {:.1} ms",
        ms(histogram, 0.5),
        ms(histogram, 0.9),
        ms(histogram, 0.99),
        histogram.as_ref().map_or(0.0, |h| h.max() as f64 / 1000.0)
    )
}

fn report(
    settings: &Settings,
    tally: &Tally,
    placing_took: Duration,
    unsettled: usize,
    json_path: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let seconds = placing_took.as_secs_f64().max(1e-9);
    let accepted = tally.accepted as f64 / seconds;
    let confirmed = tally.confirmed as f64 / seconds;
    let mut figures = Map::new();
    super::machine_fields(&mut figures);
    figures.insert("duration_s".into(), json!(seconds));
    figures.insert("concurrency".into(), json!(settings.concurrency));
    figures.insert("users".into(), json!(settings.users));
    figures.insert("products".into(), json!(settings.products));
    figures.insert("accepted_orders_per_sec".into(), json!(accepted));
    figures.insert("confirmed_orders_per_sec".into(), json!(confirmed));
    figures.insert("orders_accepted".into(), json!(tally.accepted));
    figures.insert("orders_confirmed".into(), json!(tally.confirmed));
    figures.insert("orders_rejected".into(), json!(tally.rejected));
    figures.insert("orders_paid".into(), json!(tally.paid));
    figures.insert("orders_cancelled".into(), json!(tally.cancelled));
    figures.insert("orders_unsettled".into(), json!(unsettled));
    if let Some(h) = &tally.post_latency {
        latency_fields("post_orders_latency", h, &mut figures);
    }
    if let Some(h) = &tally.visible_latency {
        latency_fields("placed_to_confirmed_latency", h, &mut figures);
    }
    figures.insert(
        "projection_lag_max_ms".into(),
        json!(tally.max_lag_seconds * 1000.0),
    );
    figures.insert("errors".into(), json!(tally.errors));

    println!(
        "ordo bench place-orders: {:.0} s, {} clients",
        seconds, settings.concurrency
    );
    line(
        "orders accepted (202)",
        format!("{} ({} in all)", rate(accepted), tally.accepted),
    );
    line(
        "orders confirmed",
        format!("{} ({} in all)", rate(confirmed), tally.confirmed),
    );
    line(
        "orders rejected / paid / cancelled",
        format!("{} / {} / {}", tally.rejected, tally.paid, tally.cancelled),
    );
    line(
        "POST /orders p50 / p90 / p99 / max",
        quantiles(&tally.post_latency),
    );
    line(
        "placed → confirmed visible p50/p90/p99/max",
        quantiles(&tally.visible_latency),
    );
    line(
        "projection lag, max",
        format!("{:.0} ms", tally.max_lag_seconds * 1000.0),
    );
    line("orders still unsettled after the drain", unsettled);
    if !tally.errors.is_empty() {
        line("errors", format!("{:?}", tally.errors));
    }
    super::write_json(json_path, &figures)?;
    if let Some(path) = json_path {
        let svg = path.with_extension("svg");
        std::fs::write(&svg, chart(&tally.seconds))
            .with_context(|| format!("writing {}", svg.display()))?;
        println!("chart written to {}", svg.display());
    }
    Ok(())
}

/// Throughput and latency per second, as an SVG of two panels.
fn chart(seconds: &[Second]) -> String {
    let (width, panel, margin) = (900.0, 220.0, 50.0);
    let n = seconds.len().max(2) as f64;
    let x = |i: usize| margin + (width - 2.0 * margin) * i as f64 / (n - 1.0);
    let series = |values: Vec<f64>, top: f64, max: f64| -> String {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                format!(
                    "{:.1},{:.1}",
                    x(i),
                    top + panel - panel * (v / max.max(1e-9)).min(1.0)
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let placed: Vec<f64> = seconds.iter().map(|s| s.placed as f64).collect();
    let confirmed: Vec<f64> = seconds.iter().map(|s| s.confirmed as f64).collect();
    let post_p99: Vec<f64> = seconds.iter().map(|s| ms(&s.post, 0.99)).collect();
    let visible_p99: Vec<f64> = seconds.iter().map(|s| ms(&s.visible, 0.99)).collect();
    let rate_max = placed.iter().chain(&confirmed).copied().fold(1.0, f64::max) * 1.1;
    let latency_max = post_p99
        .iter()
        .chain(&visible_p99)
        .copied()
        .fold(1.0, f64::max)
        * 1.1;
    let (top1, top2) = (40.0, 40.0 + panel + 70.0);
    let height = top2 + panel + 50.0;
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{margin}" y="25" font-size="14">orders per second (blue: accepted, green: confirmed); max {rate_max:.0}/s</text>
<rect x="{margin}" y="{top1}" width="{w}" height="{panel}" fill="none" stroke="#ccc"/>
<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{p1}"/>
<polyline fill="none" stroke="#2ca02c" stroke-width="1.5" points="{p2}"/>
<text x="{margin}" y="{t2}" font-size="14">p99 latency per second, ms (orange: POST /orders, red: placed → confirmed visible); max {latency_max:.0} ms</text>
<rect x="{margin}" y="{top2}" width="{w}" height="{panel}" fill="none" stroke="#ccc"/>
<polyline fill="none" stroke="#ff7f0e" stroke-width="1.5" points="{p3}"/>
<polyline fill="none" stroke="#d62728" stroke-width="1.5" points="{p4}"/>
<text x="{margin}" y="{bottom}">0 s</text><text x="{right}" y="{bottom}" text-anchor="end">{secs} s</text>
</svg>
"##,
        w = width - 2.0 * margin,
        p1 = series(placed, top1, rate_max),
        p2 = series(confirmed, top1, rate_max),
        t2 = top2 - 15.0,
        p3 = series(post_p99, top2, latency_max),
        p4 = series(visible_p99, top2, latency_max),
        bottom = top2 + panel + 20.0,
        right = width - margin,
        secs = seconds.len(),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_acknowledged_command_is_one_json_line_naming_its_stream_version_and_position() {
        let id = Uuid::new_v4();
        let answer = json!({ "id": id, "version": 3, "position": "812.4051", "status": "pending" });
        let line = ack_line("order.pay", "order", 200, &answer);
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let parsed: Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(
            parsed,
            json!({
                "kind": "order.pay",
                "status": 200,
                "stream_id": format!("order-{id}"),
                "version": 3,
                "position": "812.4051",
            })
        );
    }

    #[test]
    fn the_ack_log_appends_complete_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("acked.jsonl");
        std::fs::write(&path, "{\"kind\":\"earlier\"}\n").unwrap();
        let log = AckLog::create(&path).unwrap();
        for version in 1..=3 {
            let answer = json!({ "id": Uuid::new_v4(), "version": version, "position": "1.1" });
            log.record("user.create", "user", 201, &answer);
        }
        log.finish().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 4, "appended after what was there: {text}");
        assert_eq!(lines[3]["version"], 3);
        assert!(lines[3]["stream_id"].as_str().unwrap().starts_with("user-"));
    }

    #[test]
    fn jitter_stays_between_the_base_and_half_again() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..100 {
            let d = jitter(&mut rng, BACKOFF);
            assert!(d >= BACKOFF && d <= BACKOFF.mul_f64(1.5));
        }
    }
}
