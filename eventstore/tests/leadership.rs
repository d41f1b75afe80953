//! The leadership loop (`eventstore::leadership`) against a real PostgreSQL:
//! one term at a time per lock key, standbys taking over when the holder
//! stops, shuts down or loses its lock session, and each way a term can end.
//!
//! Every wait has a deadline; nothing sleeps and then asserts that enough
//! time passed for something to happen. A few waits give a wrong holder the
//! chance to show itself (a standby that would take a held lock), and those
//! assert only that it did not.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventstore::leadership::{Backoff, Leadership, Lease, LockKey, TermEnd};
use eventstore::DatabaseUrl;
use test_support::{eventually, throughout, Running, TestEnv};
use tokio_util::sync::CancellationToken;

/// How often standbys try for the lock and holders look at their session.
const POLL: Duration = Duration::from_millis(25);
/// What a takeover may take beyond one [`POLL`]: opening a connection and
/// taking the lock on a machine busy with other work. Well under the default
/// poll of a second, so a loop that ignored the configured poll would show.
const SLACK: Duration = Duration::from_millis(500);
/// For waits whose speed is not what is tested (a first term, a shutdown).
const PATIENCE: Duration = Duration::from_secs(10);

/// A key no other test uses (advisory locks are per database anyway).
fn key(env: &TestEnv, job: &str) -> LockKey {
    LockKey::new("test", format!("{}-{job}", env.id))
}

/// A leadership polling every [`POLL`], backing off 20 to 40 ms.
fn leadership(url: &DatabaseUrl, key: LockKey, job: &str) -> Leadership {
    Leadership::new(url.clone(), key, job)
        .standby_poll(POLL)
        .backoff(Backoff {
            first: Duration::from_millis(20),
            max: Duration::from_millis(40),
        })
}

/// Terms running at this moment, over every contender of a test, and the
/// most that ever ran at once.
#[derive(Debug, Default)]
struct Overlap {
    now: AtomicUsize,
    most: AtomicUsize,
}

impl Overlap {
    fn enter(self: &Arc<Self>) -> Counted {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        Counted(self.clone())
    }

    fn most(&self) -> usize {
        self.most.load(Ordering::SeqCst)
    }
}

/// One term counted in an [`Overlap`] until it returns or is dropped.
struct Counted(Arc<Overlap>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What the test sees of one contender's terms.
#[derive(Debug, Default)]
struct Seen {
    /// Terms started.
    terms: AtomicUsize,
    /// A term of this contender is running (started, not yet returned or
    /// dropped).
    in_term: AtomicBool,
    /// When each term started and ended (returned or was dropped).
    started: Mutex<Vec<Instant>>,
    ended: Mutex<Vec<Instant>>,
    /// Whether each term returned (false: it was dropped while running).
    returned: Mutex<Vec<bool>>,
    /// `on_active` calls, in order.
    active: Mutex<Vec<bool>>,
    /// The lease of the latest term, when the test keeps it.
    lease: Mutex<Option<Lease>>,
}

impl Seen {
    fn terms(&self) -> usize {
        self.terms.load(Ordering::SeqCst)
    }

    fn in_term(&self) -> bool {
        self.in_term.load(Ordering::SeqCst)
    }

    fn active(&self) -> Vec<bool> {
        self.active.lock().expect("active").clone()
    }

    fn started(&self, n: usize) -> Instant {
        self.started.lock().expect("started")[n]
    }

    fn ended(&self, n: usize) -> Instant {
        self.ended.lock().expect("ended")[n]
    }

    fn returned(&self) -> Vec<bool> {
        self.returned.lock().expect("returned").clone()
    }
}

/// Marks a term as running until it returns or is dropped.
struct InTerm {
    seen: Arc<Seen>,
    _running: Counted,
    returned: bool,
}

impl Drop for InTerm {
    fn drop(&mut self) {
        self.seen.in_term.store(false, Ordering::SeqCst);
        self.seen.ended.lock().expect("ended").push(Instant::now());
        self.seen
            .returned
            .lock()
            .expect("returned")
            .push(self.returned);
    }
}

/// How the `n`th term (from 0) of a contender ends: `Some` at once, `None`
/// by working until its `end_term` or its shutdown, then `Stopped`.
type Script = fn(usize) -> Option<TermEnd<String>>;

fn work(_: usize) -> Option<TermEnd<String>> {
    None
}

/// One process doing the job: its run on a task, and handles on it.
struct Contender {
    seen: Arc<Seen>,
    /// Cancelled, it makes the running term return `Stopped` (shutdown is
    /// not asked for: the run returns as it would for a job that is done).
    end_term: CancellationToken,
    /// The run; stopping it asks for shutdown.
    run: Running<Result<(), String>>,
}

impl Contender {
    fn spawn(leadership: Leadership, overlap: &Arc<Overlap>, script: Script) -> Contender {
        Contender::spawn_keeping(leadership, overlap, script, false)
    }

    /// With `keep_lease`, each term's lease is kept in [`Seen::lease`]
    /// after the term: it holds the lock's session open, so only tests that
    /// end that session from outside keep it.
    fn spawn_keeping(
        leadership: Leadership,
        overlap: &Arc<Overlap>,
        script: Script,
        keep_lease: bool,
    ) -> Contender {
        let seen = Arc::new(Seen::default());
        let end_term = CancellationToken::new();
        let on_active = seen.clone();
        let leadership = leadership.on_active(move |active| {
            on_active.active.lock().expect("active").push(active);
        });
        let (term_seen, term_end, overlap) = (seen.clone(), end_term.clone(), overlap.clone());
        let run = Running::spawn(|shutdown| {
            let term_shutdown = shutdown.clone();
            let term = move |lease: Lease| {
                let (seen, shutdown, end_term) =
                    (term_seen.clone(), term_shutdown.clone(), term_end.clone());
                let running = overlap.enter();
                async move {
                    let n = seen.terms.fetch_add(1, Ordering::SeqCst);
                    seen.in_term.store(true, Ordering::SeqCst);
                    seen.started.lock().expect("started").push(Instant::now());
                    let mut guard = InTerm {
                        seen: seen.clone(),
                        _running: running,
                        returned: false,
                    };
                    if keep_lease {
                        *seen.lease.lock().expect("lease") = Some(lease.clone());
                    }
                    let end = match script(n) {
                        Some(end) => end,
                        None => {
                            tokio::select! {
                                () = end_term.cancelled() => {}
                                () = shutdown.cancelled() => {}
                            }
                            TermEnd::Stopped
                        }
                    };
                    drop(lease);
                    guard.returned = true;
                    drop(guard);
                    end
                }
            };
            async move { leadership.run(&shutdown, term).await }
        });
        Contender {
            seen,
            end_term,
            run,
        }
    }

    /// Asks for shutdown and waits for the run to return.
    async fn stop(self) -> Result<(), String> {
        self.run.stop().await
    }

    /// Waits for the run to return, without asking it to.
    async fn join(self) -> Result<(), String> {
        let mut run = self.run;
        run.ended_within(PATIENCE).await.expect("the run returns")
    }
}

/// Ends the session holding `key`'s advisory lock in this database, as an
/// operator's `pg_terminate_backend` or a dropped connection would; returns
/// how many sessions it ended. A bigint key is stored as two oids: `classid`
/// the high 32 bits, `objid` the low ones, `objsubid` 1 (2 is the form with
/// two int4 keys).
async fn kill_holder(env: &TestEnv, key: LockKey) -> usize {
    let bits = key.get() as u64;
    let (high, low) = ((bits >> 32) as u32, bits as u32);
    let client = env.client().await;
    let rows = client
        .query(
            "select pg_terminate_backend(pid) from pg_locks
              where locktype = 'advisory' and granted
                and database = (select oid from pg_database where datname = current_database())
                and classid = $1 and objid = $2 and objsubid = 1",
            &[&high, &low],
        )
        .await
        .expect("terminate the holder");
    rows.iter().filter(|row| row.get::<_, bool>(0)).count()
}

/// Whether anyone holds `key`'s lock, asked by taking it on a connection of
/// the test's own and giving it back at once.
async fn held(env: &TestEnv, key: LockKey) -> bool {
    let client = env.client().await;
    let free = key.try_lock(&**client).await.expect("try the lock");
    if free {
        key.unlock(&**client).await.expect("give the lock back");
    }
    !free
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_term_at_a_time_and_a_standby_takes_over_when_the_holder_stops() {
    let env = TestEnv::new().await;
    let key = key(&env, "job");
    let overlap = Arc::new(Overlap::default());
    let a = Contender::spawn(leadership(&env.database_url, key, "a"), &overlap, work);
    eventually("a first term", PATIENCE, || a.seen.in_term()).await;
    let b = Contender::spawn(leadership(&env.database_url, key, "b"), &overlap, work);
    let c = Contender::spawn(leadership(&env.database_url, key, "c"), &overlap, work);
    // Two standbys get many tries at a held lock.
    throughout("one term at a time", POLL * 10, || {
        a.seen.in_term() && overlap.most() == 1
    })
    .await;
    assert_eq!((b.seen.terms(), c.seen.terms()), (0, 0));

    // The holder's term says the job is done: its run returns, and one of
    // the standbys takes over within a poll.
    a.end_term.cancel();
    let stopped = Instant::now();
    assert_eq!(a.join().await, Ok(()));
    eventually("a standby takes over", POLL + SLACK, || {
        b.seen.in_term() || c.seen.in_term()
    })
    .await;
    let (active, standby) = if b.seen.in_term() { (b, c) } else { (c, b) };
    tracing::info!(after = ?stopped.elapsed(), "took over");
    throughout("still one term at a time", POLL * 10, || {
        active.seen.in_term() && !standby.seen.in_term()
    })
    .await;

    // Shutdown of the holder: its term sees it and stops, the last standby
    // takes over.
    active.run.ask_to_stop();
    let stopped = Instant::now();
    eventually("the last standby takes over", POLL + SLACK, || {
        standby.seen.in_term()
    })
    .await;
    tracing::info!(after = ?stopped.elapsed(), "took over");
    assert_eq!(active.seen.active(), vec![true, false]);
    assert_eq!(active.join().await, Ok(()));
    assert_eq!(standby.seen.active(), vec![true]);
    assert_eq!(standby.stop().await, Ok(()));
    assert_eq!(overlap.most(), 1, "never two terms at once");
    assert!(
        !held(&env, key).await,
        "the lock is free once everyone stopped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_asked_to_shut_down_returns_without_a_term() {
    let env = TestEnv::new().await;
    let key = key(&env, "job");
    let overlap = Arc::new(Overlap::default());
    let a = Contender::spawn(leadership(&env.database_url, key, "a"), &overlap, work);
    eventually("a first term", PATIENCE, || a.seen.in_term()).await;
    let b = Contender::spawn(leadership(&env.database_url, key, "b"), &overlap, work);
    throughout("b stands by", POLL * 4, || !b.seen.in_term()).await;
    let b_seen = b.seen.clone();
    let asked = Instant::now();
    assert_eq!(b.stop().await, Ok(()));
    assert!(
        asked.elapsed() < POLL + SLACK,
        "a standby stops within a poll, took {:?}",
        asked.elapsed()
    );
    assert_eq!((b_seen.terms(), b_seen.active()), (0, vec![]));
    assert!(a.seen.in_term(), "the holder is not disturbed");
    assert_eq!(a.stop().await, Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_whose_session_is_killed_loses_its_term_and_a_standby_takes_over() {
    let env = TestEnv::new().await;
    let key = key(&env, "job");
    let overlap = Arc::new(Overlap::default());
    // The old holder pauses, once interrupted, for as long as the standby
    // may take to take over, so the standby is the one that does.
    let pause = POLL + SLACK;
    let a = Contender::spawn_keeping(
        leadership(&env.database_url, key, "a").backoff(Backoff {
            first: pause,
            max: pause,
        }),
        &overlap,
        work,
        true,
    );
    eventually("a first term", PATIENCE, || a.seen.in_term()).await;
    let b = Contender::spawn(leadership(&env.database_url, key, "b"), &overlap, work);
    throughout("b stands by", POLL * 4, || !b.seen.in_term()).await;
    let lease = a
        .seen
        .lease
        .lock()
        .expect("lease")
        .clone()
        .expect("a's lease");
    assert!(!lease.is_lost());

    assert_eq!(
        kill_holder(&env, key).await,
        1,
        "one session holds the lock"
    );
    let killed = Instant::now();
    // The holder's term is dropped, not left running beside the new
    // holder's; it finds out within a poll.
    eventually("a's term is dropped", POLL + SLACK, || !a.seen.in_term()).await;
    assert!(lease.is_lost(), "the lease knows its session is gone");
    assert_eq!(a.seen.returned(), vec![false], "dropped, not returned");
    eventually("b takes over", POLL + SLACK, || b.seen.in_term()).await;
    tracing::info!(after = ?killed.elapsed(), "took over");
    // Two holders may overlap for at most the poll it takes the old one to
    // notice; here the old one was dropped before the new one could start,
    // or soon after.
    let (dropped, taken) = (a.seen.ended(0), b.seen.started(0));
    assert!(
        dropped.saturating_duration_since(taken) <= POLL + SLACK,
        "a ran beside b for {:?}",
        dropped.saturating_duration_since(taken)
    );

    // The old holder backs off, then stands by: it does not get the job back
    // while b holds it.
    throughout("a stands by", pause * 2, || {
        b.seen.in_term() && !a.seen.in_term()
    })
    .await;
    assert_eq!(a.seen.active(), vec![true, false]);
    assert_eq!(a.seen.terms(), 1);
    assert_eq!(a.stop().await, Ok(()));
    assert_eq!(b.stop().await, Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_keeps_the_lock_until_shutdown() {
    let env = TestEnv::new().await;
    let key = key(&env, "job");
    let overlap = Arc::new(Overlap::default());
    let a = Contender::spawn(leadership(&env.database_url, key, "a"), &overlap, |_| {
        Some(TermEnd::Hold)
    });
    eventually("a's term returns Hold", PATIENCE, || {
        a.seen.returned() == vec![true]
    })
    .await;
    let b = Contender::spawn(leadership(&env.database_url, key, "b"), &overlap, work);
    throughout("nobody takes a held job", POLL * 20, || {
        b.seen.terms() == 0 && !a.run.is_finished()
    })
    .await;
    assert!(held(&env, key).await, "the lock is still held");
    assert_eq!(a.seen.terms(), 1, "no new term while holding");
    assert_eq!(a.seen.active(), vec![true], "still the active one");

    let a_seen = a.seen.clone();
    assert_eq!(a.stop().await, Ok(()));
    assert_eq!(a_seen.active(), vec![true, false]);
    eventually("b takes over after the shutdown", POLL + SLACK, || {
        b.seen.in_term()
    })
    .await;
    assert_eq!(b.stop().await, Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_starts_a_new_term_without_backing_off() {
    let env = TestEnv::new().await;
    let key = key(&env, "job");
    let overlap = Arc::new(Overlap::default());
    // A backoff no deadline below would survive.
    let slow = Backoff {
        first: Duration::from_secs(60),
        max: Duration::from_secs(60),
    };
    let a = Contender::spawn(
        leadership(&env.database_url, key, "a").backoff(slow),
        &overlap,
        |n| (n < 3).then_some(TermEnd::Restart),
    );
    eventually("three restarts and a fourth term", PATIENCE, || {
        a.seen.terms() == 4 && a.seen.in_term()
    })
    .await;
    for n in 0..3 {
        let gap = a.seen.started(n + 1).duration_since(a.seen.ended(n));
        assert!(gap < POLL + SLACK, "term {} started {gap:?} after", n + 1);
    }
    assert_eq!(
        a.seen.active(),
        vec![true, false, true, false, true, false, true]
    );
    assert_eq!(overlap.most(), 1);
    assert_eq!(a.stop().await, Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fatal_stops_the_run_with_its_error_and_lets_the_lock_go() {
    let env = TestEnv::new().await;
    let key = key(&env, "job");
    let overlap = Arc::new(Overlap::default());
    let a = Contender::spawn(leadership(&env.database_url, key, "a"), &overlap, |_| {
        Some(TermEnd::Fatal("the schema is newer than this build".into()))
    });
    let a_seen = a.seen.clone();
    assert_eq!(
        a.join().await,
        Err("the schema is newer than this build".into()),
        "the run returns the term's error, not retrying"
    );
    assert_eq!(a_seen.terms(), 1);
    assert_eq!(a_seen.active(), vec![true, false]);
    let b = Contender::spawn(leadership(&env.database_url, key, "b"), &overlap, work);
    eventually("the lock is free for another", POLL + SLACK, || {
        b.seen.in_term()
    })
    .await;
    assert_eq!(b.stop().await, Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interrupted_backs_off_doubling_then_tries_again() {
    let env = TestEnv::new().await;
    let key = key(&env, "job");
    let overlap = Arc::new(Overlap::default());
    let backoff = Backoff {
        first: Duration::from_millis(60),
        max: Duration::from_millis(150),
    };
    let a = Contender::spawn(
        leadership(&env.database_url, key, "a").backoff(backoff),
        &overlap,
        |n| (n < 3).then(|| TermEnd::Interrupted("NATS is away".into())),
    );
    eventually("three interruptions and a fourth term", PATIENCE, || {
        a.seen.terms() == 4 && a.seen.in_term()
    })
    .await;
    // Sleeps never end early, so these lower bounds are safe: 60 ms, then
    // doubled to 120, then capped at 150.
    let pauses = [60, 120, 150].map(Duration::from_millis);
    for (n, pause) in pauses.into_iter().enumerate() {
        let gap = a.seen.started(n + 1).duration_since(a.seen.ended(n));
        assert!(gap >= pause, "term {} after {gap:?}, not {pause:?}", n + 1);
    }
    assert_eq!(
        a.seen.active(),
        vec![true, false, true, false, true, false, true]
    );
    assert_eq!(a.stop().await, Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_holder_lets_the_lock_go_while_it_pauses() {
    let env = TestEnv::new().await;
    let key = key(&env, "job");
    let overlap = Arc::new(Overlap::default());
    // A long pause: the standby has all of it to take over.
    let long = Backoff {
        first: Duration::from_secs(60),
        max: Duration::from_secs(60),
    };
    let a = Contender::spawn(
        leadership(&env.database_url, key, "a").backoff(long),
        &overlap,
        |n| (n == 0).then(|| TermEnd::Interrupted("PostgreSQL is away".into())),
    );
    eventually("a's term is interrupted", PATIENCE, || {
        a.seen.returned() == vec![true]
    })
    .await;
    let b = Contender::spawn(leadership(&env.database_url, key, "b"), &overlap, work);
    eventually("b takes over while a pauses", POLL + SLACK, || {
        b.seen.in_term()
    })
    .await;
    assert_eq!(a.seen.terms(), 1);
    assert_eq!(a.seen.active(), vec![true, false]);
    let a_seen = a.seen.clone();
    let asked = Instant::now();
    assert_eq!(a.stop().await, Ok(()), "shutdown cuts the pause short");
    assert!(asked.elapsed() < SLACK, "took {:?}", asked.elapsed());
    assert_eq!(a_seen.terms(), 1);
    assert_eq!(b.stop().await, Ok(()));
    assert_eq!(overlap.most(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_keys_do_not_exclude_each_other() {
    let env = TestEnv::new().await;
    let overlap = Arc::new(Overlap::default());
    let a = Contender::spawn(
        leadership(&env.database_url, key(&env, "one"), "a"),
        &overlap,
        work,
    );
    let b = Contender::spawn(
        leadership(&env.database_url, key(&env, "two"), "b"),
        &overlap,
        work,
    );
    eventually("both active at once", PATIENCE, || {
        a.seen.in_term() && b.seen.in_term()
    })
    .await;
    assert_eq!(overlap.most(), 2);
    assert_eq!(a.stop().await, Ok(()));
    assert_eq!(b.stop().await, Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_retried_until_shutdown() {
    test_support::init_tracing();
    // Nothing listens on port 1.
    let nowhere: DatabaseUrl = "postgres://root@127.0.0.1:1/ordo".parse().expect("url");
    let overlap = Arc::new(Overlap::default());
    let key = LockKey::new("test", uuid::Uuid::new_v4());
    let a = Contender::spawn(leadership(&nowhere, key, "a"), &overlap, work);
    throughout("no term without the lock", POLL * 10, || {
        !a.run.is_finished()
    })
    .await;
    let a_seen = a.seen.clone();
    assert_eq!(a.stop().await, Ok(()));
    assert_eq!((a_seen.terms(), a_seen.active()), (0, vec![]));
}
