//! The store's contract, run on whichever backend the suite is pointed at
//! (.ci/run runs it on SQLite and on PostgreSQL).

use crate::helpers::*;
use standby_store::*;

fn message(reference: &str) -> NewMessage {
    NewMessage {
        reference: reference.into(),
        channel: "email".into(),
        kind: "test".into(),
        registrant_id: None,
        recipient: "x@example.be".into(),
        subject: Some("s".into()),
        body: "b".into(),
    }
}

/// A national ID's key for the tests: `name`'s bytes, then zeros.
fn key(name: &str) -> NidKey {
    let mut k = [0u8; 16];
    k[..name.len()].copy_from_slice(name.as_bytes());
    NidKey(k)
}

fn registrant(nid_hash: NidKey, confirm: &str) -> NewRegistrant {
    NewRegistrant {
        nid_hash,
        country: "BE".into(),
        birth_ymd: 19_850_730,
        title: None,
        first_name: "A".into(),
        last_name: "B".into(),
        email: "a@b.be".into(),
        phone: None,
        language: "fr".into(),
        centers: vec![],
        availability: vec![(0, 540, 720)],
        confirm_hash: confirm.into(),
        confirm_expires_at: 10_000,
        me_hash: format!("me-{confirm}"),
        me_expires_at: 1_000_000,
        message: Some(message(&format!("ref-{confirm}"))),
        confirmed_at: None,
    }
}

async fn store() -> (SqlStore, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let url = fresh_database_url(tmp.path()).await;
    let s = connect(&url).await.unwrap();
    s.migrate().await.unwrap();
    s.migrate().await.unwrap(); // idempotent
    (s, tmp)
}

#[tokio::test]
async fn batches_deduplicate_within_and_across() {
    let (s, _t) = store().await;
    let out = s
        .insert_registrations(
            vec![
                registrant(key("h1"), "c1"),
                registrant(key("h2"), "c2"),
                registrant(key("h1"), "c3"),
            ],
            1,
        )
        .await
        .unwrap();
    let [
        InsertOutcome::Created(first),
        InsertOutcome::Created(second),
        InsertOutcome::Duplicate,
    ] = out[..]
    else {
        panic!("expected two created and one duplicate, got {out:?}");
    };
    // Each id given back is the row holding that sign-up.
    for (id, token) in [(first, "c1"), (second, "c2")] {
        let stored = s
            .registrant_by_token(TokenPurpose::Confirm, token, 1)
            .await
            .unwrap()
            .expect("the confirmation token finds its registrant");
        assert_eq!(stored.id, id, "{token}");
    }
    assert_ne!(first, second);
    let out = s
        .insert_registrations(vec![registrant(key("h2"), "c4")], 2)
        .await
        .unwrap();
    assert_eq!(out, vec![InsertOutcome::Duplicate]);
    assert_eq!(s.stats().await.unwrap().registered, 2);
    let queued: i64 = s
        .outbox_counts()
        .await
        .unwrap()
        .iter()
        .map(|(_, _, n)| n)
        .sum();
    assert_eq!(
        queued, 2,
        "one confirmation message per new registrant, none for duplicates"
    );
}

#[tokio::test]
async fn confirmation_is_once_and_expires() {
    let (s, _t) = store().await;
    s.insert_registrations(
        vec![registrant(key("h1"), "c1"), registrant(key("h2"), "c2")],
        1,
    )
    .await
    .unwrap();
    assert!(matches!(
        s.confirm_registrant("c1", "m1", 5).await.unwrap(),
        ConfirmOutcome::Confirmed(_)
    ));
    assert!(matches!(
        s.confirm_registrant("c1", "m1b", 6).await.unwrap(),
        ConfirmOutcome::AlreadyConfirmed(_)
    ));
    assert_eq!(
        s.confirm_registrant("c2", "m2", 10_000).await.unwrap(),
        ConfirmOutcome::Expired
    );
    assert_eq!(
        s.confirm_registrant("nope", "m3", 5).await.unwrap(),
        ConfirmOutcome::Unknown
    );
    let stats = s.stats().await.unwrap();
    assert_eq!((stats.confirmed, stats.waiting), (1, 1));
    let r = s
        .registrant_by_token(TokenPurpose::Me, "m1", 7)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status, "waiting");
    assert_eq!(r.confirmed_at, Some(5));
    assert_eq!(r.availability, vec![(0, 540, 720)]);
    assert!(
        s.registrant_by_token(TokenPurpose::Me, "m1", 100_000_000_000)
            .await
            .unwrap()
            .is_none(),
        "expired token"
    );
}

#[tokio::test]
async fn claims_are_leases_and_stale_workers_change_nothing() {
    let (s, _t) = store().await;
    s.enqueue_message(&message("r1"), 100).await.unwrap();
    s.enqueue_message(&message("r2"), 100).await.unwrap();
    let a = s
        .claim_messages("email", "A", 100, 1_000, 10)
        .await
        .unwrap();
    assert_eq!(
        a.iter().map(|m| m.reference.as_str()).collect::<Vec<_>>(),
        ["r1", "r2"]
    );
    assert!(
        s.claim_messages("email", "B", 500, 1_000, 10)
            .await
            .unwrap()
            .is_empty(),
        "leased to A"
    );
    assert!(
        s.claim_messages("sms", "B", 500, 1_000, 10)
            .await
            .unwrap()
            .is_empty(),
        "other channel"
    );
    s.message_sent(a[0].id, "A", 600).await.unwrap();
    // A dies; its lease on r2 runs out and B takes it over with the same reference.
    let b = s
        .claim_messages("email", "B", 1_200, 1_000, 10)
        .await
        .unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!((b[0].reference.as_str(), b[0].attempts), ("r2", 2));
    // A, late, cannot record anything for r2 any more.
    s.message_failed(a[1].id, "A", 1_300, "late").await.unwrap();
    s.message_retry(b[0].id, "B", 5_000, "try later")
        .await
        .unwrap();
    assert!(
        s.claim_messages("email", "C", 4_999, 1_000, 10)
            .await
            .unwrap()
            .is_empty(),
        "not due yet"
    );
    assert_eq!(s.next_message_due("email").await.unwrap(), Some(5_000));
    let c = s
        .claim_messages("email", "C", 5_000, 1_000, 10)
        .await
        .unwrap();
    assert_eq!(c[0].reference, "r2");
    s.message_sent(c[0].id, "C", 5_001).await.unwrap();
    let counts = s.outbox_counts().await.unwrap();
    assert_eq!(counts, vec![("email".to_string(), "sent".to_string(), 2)]);
}

#[tokio::test]
async fn a_claim_takes_lapsed_leases_first_then_the_oldest_queued_up_to_its_limit() {
    let (s, _t) = store().await;
    for (reference, at) in [("old1", 100), ("old2", 101)] {
        s.enqueue_message(&message(reference), at).await.unwrap();
    }
    let a = s.claim_messages("email", "A", 200, 1_000, 2).await.unwrap();
    assert_eq!(a.len(), 2);
    // Queued later, in an order that differs from their due times' order.
    for (reference, at) in [("q3", 400), ("q1", 300), ("q2", 350)] {
        s.enqueue_message(&message(reference), at).await.unwrap();
    }
    // A's lease ran out at 1,200: both lapsed messages come first, then one
    // queued message, the oldest, and no more than asked for.
    let b = s
        .claim_messages("email", "B", 1_500, 1_000, 3)
        .await
        .unwrap();
    let mut got: Vec<_> = b.iter().map(|m| m.reference.as_str()).collect();
    got.sort_unstable();
    assert_eq!(got, ["old1", "old2", "q1"]);
    assert!(
        b.iter()
            .all(|m| m.attempts == if m.reference == "q1" { 1 } else { 2 })
    );
    let c = s
        .claim_messages("email", "C", 1_500, 1_000, 5)
        .await
        .unwrap();
    let got: Vec<_> = c.iter().map(|m| m.reference.as_str()).collect();
    assert_eq!(got, ["q3", "q2"], "the rest, in the order they were stored");
    assert!(
        s.claim_messages("email", "D", 1_500, 1_000, 5)
            .await
            .unwrap()
            .is_empty(),
        "everything is leased"
    );
    // Nothing queued: the next thing due is the end of the leases.
    assert_eq!(s.next_message_due("email").await.unwrap(), Some(2_500));
    assert_eq!(s.next_message_due("sms").await.unwrap(), None);
    s.enqueue_message(&message("q4"), 2_000).await.unwrap();
    assert_eq!(s.next_message_due("email").await.unwrap(), Some(2_000));
}

#[tokio::test]
async fn concurrent_batches_repeating_each_others_ids_do_not_deadlock() {
    // PostgreSQL's writers commit batches side by side; two that hold the
    // same national IDs in different orders each waited for the other's
    // pending index entry (a deadlock, answered 500).
    let (s, _t) = store().await;
    let s = std::sync::Arc::new(s);
    for round in 0..5 {
        let batch = |reverse: bool, side: &str| {
            let mut ids: Vec<usize> = (0..200).collect();
            if reverse {
                ids.reverse();
            }
            ids.into_iter()
                .map(|i| {
                    registrant(
                        key(&format!("r{round}-h{i:03}")),
                        &format!("r{round}-{side}{i}"),
                    )
                })
                .collect::<Vec<_>>()
        };
        let (a, b) = (batch(false, "a"), batch(true, "b"));
        let (sa, sb) = (s.clone(), s.clone());
        let (ra, rb) = tokio::join!(
            tokio::spawn(async move { sa.insert_registrations(a, 1).await }),
            tokio::spawn(async move { sb.insert_registrations(b, 1).await })
        );
        let (ra, rb) = (ra.unwrap().unwrap(), rb.unwrap().unwrap());
        // Each ID was created by exactly one of the two batches.
        for i in 0..200 {
            let created = [ra[i], rb[199 - i]]
                .iter()
                .filter(|o| matches!(o, InsertOutcome::Created(_)))
                .count();
            assert_eq!(created, 1, "round {round}, ID {i}");
        }
    }
    assert_eq!(s.stats().await.unwrap().registered, 1_000);
}

#[tokio::test]
async fn withdrawal_erases_and_unsent_messages_are_withdrawn() {
    let (s, _t) = store().await;
    let out = s
        .insert_registrations(vec![registrant(key("h1"), "c1")], 1)
        .await
        .unwrap();
    let InsertOutcome::Created(id) = out[0] else {
        panic!()
    };
    s.withdraw_registrant(id, 2).await.unwrap();
    s.withdraw_registrant(id, 3).await.unwrap(); // twice is fine
    let row = s.registrant_raw_row(id).await.unwrap().unwrap();
    assert!(
        row.iter()
            .filter(|(c, _)| c != "status" && c != "language")
            .all(|(_, v)| v.is_none())
    );
    assert!(
        s.claim_messages("email", "A", 10, 1_000, 10)
            .await
            .unwrap()
            .is_empty(),
        "confirmation not sent after withdrawal"
    );
    assert_eq!(
        s.outbox_counts().await.unwrap(),
        vec![("email".to_string(), "withdrawn".to_string(), 1)]
    );
    // The same national ID may register again.
    assert!(matches!(
        s.insert_registrations(vec![registrant(key("h1"), "c9")], 4)
            .await
            .unwrap()[0],
        InsertOutcome::Created(_)
    ));
}

#[tokio::test]
async fn centres_vaccines_stock_users_and_audit() {
    let (s, _t) = store().await;
    let c = s
        .create_center(
            &NewCenter {
                name: "Esch".into(),
                address: "Bd".into(),
                postal_code: "4170".into(),
                time_zone: "Europe/Luxembourg".into(),
                quiet_hours: None,
            },
            "admin:1",
            1,
        )
        .await
        .unwrap();
    assert_eq!(
        s.known_centers(&[c.id, c.id + 100]).await.unwrap(),
        vec![c.id]
    );
    let v = VaccineRecord {
        code: "AZ".into(),
        name: "Vaxzevria".into(),
        min_age: 41,
        max_age: 120,
    };
    s.create_vaccine(&v, "admin:1", 2).await.unwrap();
    assert!(matches!(
        s.create_vaccine(&v, "admin:1", 3).await,
        Err(StoreError::Conflict(_))
    ));
    s.record_delivery(c.id, "AZ", 300, "admin:1", 4)
        .await
        .unwrap();
    s.record_delivery(c.id, "AZ", 200, "admin:1", 5)
        .await
        .unwrap();
    let stock = s.stock(c.id).await.unwrap();
    assert_eq!(
        (stock[0].on_hand, stock[0].reserved, stock[0].administered),
        (500, 0, 0)
    );
    assert_eq!(s.stats().await.unwrap().doses_available, 500);
    let u = NewUser {
        email: "a@b.lu".into(),
        password_hash: "h".into(),
        role: "admin".into(),
        center_id: None,
    };
    s.create_user(&u, "cli", 6).await.unwrap();
    assert!(matches!(
        s.create_user(&u, "cli", 7).await,
        Err(StoreError::Conflict("user_exists"))
    ));
    assert!(s.admin_exists().await.unwrap());
    assert_eq!(
        s.user_by_email("a@b.lu").await.unwrap().unwrap().role,
        "admin"
    );
    let trail = s.audit_trail(10).await.unwrap();
    let actions: Vec<&str> = trail.iter().map(|a| a.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "user.created",
            "stock.delivered",
            "stock.delivered",
            "vaccine.created",
            "center.created"
        ]
    );
}

/// A database made by the first `n` migrations only, then the given
/// statements (SQL with `$1`… and their text values): data as an earlier
/// build left it, for the later migrations to carry over.
async fn database_before(
    n: usize,
    statements: &[(&'static str, Vec<String>)],
) -> (tempfile::TempDir, String) {
    use sqlx::migrate::Migrator;
    let tmp = tempfile::tempdir().unwrap();
    let url = fresh_database_url(tmp.path()).await;
    let folder = if url.starts_with("sqlite") {
        "crates/store/migrations/sqlite"
    } else {
        "crates/store/migrations/postgres"
    };
    let mut first = Migrator::new(std::path::Path::new(folder)).await.unwrap();
    assert!(
        first.migrations.len() > n,
        "a migration after the first {n}"
    );
    first.migrations = std::borrow::Cow::Owned(first.migrations[..n].to_vec());
    macro_rules! run {
        ($pool:expr) => {{
            let pool = $pool;
            first.run(&pool).await.unwrap();
            for (q, binds) in statements {
                let mut query = sqlx::query(*q);
                for b in binds {
                    query = query.bind(b);
                }
                query.execute(&pool).await.unwrap();
            }
            pool.close().await;
        }};
    }
    if url.starts_with("sqlite") {
        run!(
            sqlx::SqlitePool::connect(&format!("{url}?mode=rwc"))
                .await
                .unwrap()
        );
    } else {
        run!(sqlx::PgPool::connect(&url).await.unwrap());
    }
    (tmp, url)
}

/// A database made by the first two migrations, with a registrant, their
/// tokens and messages, keeps all of it through the later migrations (0003
/// rebuilds the tokens table on SQLite).
#[tokio::test]
async fn later_migrations_keep_existing_data() {
    let (_tmp, url) = database_before(
        2,
        &[
            (
                // key("h1") as the 32 hex digits stored before 0005, and a
                // key that is not hex at all, which 0005 must keep.
                "INSERT INTO registrants (nid_hash, country, language, status, created_at, status_changed_at) VALUES ('68310000000000000000000000000000', 'BE', 'fr', 'unconfirmed', 1, 1), ('odd', 'BE', 'fr', 'unconfirmed', 1, 1)",
                vec![],
            ),
            (
                "INSERT INTO tokens (hash, purpose, subject_id, created_at, expires_at) VALUES ('c1', 'confirm', 1, 1, 10000), ('me-c1', 'me', 1, 1, 1000000)",
                vec![],
            ),
        ],
    )
    .await;
    let s = connect(&url).await.unwrap();
    s.migrate().await.unwrap();
    assert!(s.has_registrant(&key("h1")).await.unwrap());
    assert_eq!(s.stats().await.unwrap().registered, 2);
    // The confirmation token made before the migration still confirms.
    assert!(matches!(
        s.confirm_registrant("c1", "m1", 5).await.unwrap(),
        ConfirmOutcome::Confirmed(_)
    ));
    // And new sign-ups work on the migrated schema.
    let out = s
        .insert_registrations(vec![registrant(key("h2"), "c2")], 6)
        .await
        .unwrap();
    assert!(matches!(out[..], [InsertOutcome::Created(_)]));
}

/// Migration 0004 cuts the keys stored before (whole SHA-256 and HMAC
/// digests) to the 128 bits kept now, and 0005 stores the national ID's as
/// bytes: a person registered before is still
/// found by their national ID (and not registered twice), and every link sent
/// before (time-ordered and all-random tokens, invitations) still works.
#[tokio::test]
async fn stored_keys_are_cut_to_the_length_made_now() {
    use standby::security::{hmac_hex, national_id_hash, random_secret, random_token, token_hash};
    // Keys as the earlier builds stored them: the whole digests.
    let secret = b"secret-one-0123456";
    let whole_nid = hmac_hex(secret, b"national-id:BE:85073003328");
    let whole_token = |token: &str| {
        use sha2::Digest;
        let digest = hex::encode(sha2::Sha256::digest(token.as_bytes()));
        if token.len() == 44 {
            format!("{}{digest}", &token[..12])
        } else {
            digest
        }
    };
    let (confirm, me, invite) = (random_token(), random_secret(), random_token());
    let statements = [
        (
            "INSERT INTO registrants (nid_hash, country, language, status, created_at, status_changed_at) VALUES ($1, 'BE', 'fr', 'unconfirmed', 1, 1)",
            vec![whole_nid],
        ),
        (
            "INSERT INTO tokens (hash, purpose, subject_id, created_at, expires_at) VALUES ($1, 'confirm', 1, 1, 10000), ($2, 'me', 1, 1, 1000000)",
            vec![whole_token(&confirm), whole_token(&me)],
        ),
        (
            "INSERT INTO centers (id, name, address, postal_code, time_zone, created_at) VALUES (1, 'C', 'A', '1000', 'Europe/Brussels', 1)",
            vec![],
        ),
        (
            "INSERT INTO vaccines (code, name, min_age, max_age, created_at) VALUES ('V', 'V', 18, 120, 1)",
            vec![],
        ),
        (
            "INSERT INTO offers (id, center_id, vaccine, doses, starts_at, ends_at, response_ms, status, created_by, created_at) VALUES (1, 1, 'V', 1, 1, 2, 1000, 'open', 'staff', 1)",
            vec![],
        ),
        (
            "INSERT INTO invitations (offer_id, registrant_id, token_hash, status, created_at) VALUES (1, 1, $1, 'queued', 1)",
            vec![whole_token(&invite)],
        ),
    ];
    let (_tmp, url) = database_before(3, &statements).await;
    let s = connect(&url).await.unwrap();
    if url.starts_with("sqlite") {
        // Not found before the migrations (on PostgreSQL the lookup by bytes
        // cannot even be asked of the text column 0005 converts).
        assert!(
            !s.has_registrant(&national_id_hash(secret, "BE:85073003328"))
                .await
                .unwrap()
        );
    }
    s.migrate().await.unwrap();
    let nid = national_id_hash(secret, "BE:85073003328");
    assert!(s.has_registrant(&nid).await.unwrap());
    // Signing up again with the same ID is a duplicate, not a second person.
    let out = s
        .insert_registrations(vec![registrant(nid, &token_hash(&random_token()))], 5)
        .await
        .unwrap();
    assert!(matches!(out[..], [InsertOutcome::Duplicate]));
    assert_eq!(s.stats().await.unwrap().registered, 1);
    // The self-service link (an all-random token of the earliest kind) and
    // the invitation still open; the confirmation link still confirms.
    assert!(
        s.registrant_by_token(TokenPurpose::Me, &token_hash(&me), 5)
            .await
            .unwrap()
            .is_some()
    );
    let invitation = s
        .invitation_by_token(&token_hash(&invite))
        .await
        .unwrap()
        .expect("the invitation sent before");
    assert_eq!(invitation.registrant_id, 1);
    assert!(matches!(
        s.confirm_registrant(&token_hash(&confirm), &token_hash(&random_token()), 5)
            .await
            .unwrap(),
        ConfirmOutcome::Confirmed(_)
    ));
}

#[tokio::test]
async fn the_backend_queue_answers_each_sign_up_after_its_batch() {
    use std::sync::{Arc, Mutex};
    let (s, _t) = store().await;
    let reports: Arc<Mutex<Vec<BatchReport>>> = Arc::default();
    let seen = reports.clone();
    let queue = s.registration_queue(
        Arc::new(|| 123_456),
        Arc::new(move |r: &BatchReport| seen.lock().unwrap().push(r.clone())),
    );
    let Some(queue) = queue else {
        // PostgreSQL has no queue of its own: the app batches for it.
        assert_eq!(s.backend(), Backend::Postgres);
        return;
    };
    assert_eq!(s.backend(), Backend::Sqlite);
    // 40 sign-ups, every fifth repeating an earlier national ID.
    let mut answers = Vec::new();
    for i in 0..40 {
        let hash = if i % 5 == 4 {
            format!("q{}", i - 4)
        } else {
            format!("q{i}")
        };
        let mut r = registrant(key(&hash), &format!("qc{i}"));
        r.confirm_expires_at = 1_000_000;
        let (tx, rx) = tokio::sync::oneshot::channel();
        queue.push(
            r,
            Box::new(move |outcome| {
                let _ = tx.send(outcome);
            }),
        );
        answers.push((i, rx));
    }
    let mut created = 0;
    for (i, rx) in answers {
        let outcome = rx.await.expect("every sign-up is answered").unwrap();
        match outcome {
            InsertOutcome::Created(_) => {
                assert_ne!(i % 5, 4, "sign-up {i} repeats an ID");
                created += 1;
            }
            InsertOutcome::Duplicate => assert_eq!(i % 5, 4, "sign-up {i} is new"),
        }
    }
    assert_eq!(created, 32);
    assert_eq!(s.stats().await.unwrap().registered, 32);
    // Dated by the queue's clock.
    let r = s
        .registrant_by_token(TokenPurpose::Confirm, "qc0", 123_457)
        .await
        .unwrap()
        .expect("stored with its confirmation token");
    assert_eq!(r.created_at, 123_456);
    // The observer heard of every batch, after its answers.
    let reports = reports.lock().unwrap().clone();
    assert_eq!(reports.iter().map(|r| r.size).sum::<usize>(), 40);
    assert_eq!(reports.iter().map(|r| r.created).sum::<usize>(), 32);
    assert!(reports.iter().all(|r| r.error.is_none()));
}

/// The salt in a SQLite write-ahead log's header, new each time the log
/// starts over.
fn wal_salt(db: &std::path::Path) -> [u8; 4] {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    let bytes = std::fs::read(std::path::PathBuf::from(wal)).expect("a write-ahead log");
    bytes[16..20].try_into().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processes_started_together_on_a_new_sqlite_file_all_migrate_it() {
    if pg_admin_url().is_some() {
        return; // PostgreSQL's migrations take sqlx's advisory lock.
    }
    for round in 0..3 {
        let tmp = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/new-{round}.db", tmp.path().display());
        // Four stores (as four processes would) open the file before any
        // of them has migrated it, then migrate it at the same moment.
        let mut stores = Vec::new();
        for _ in 0..4 {
            stores.push(connect(&url).await.unwrap());
        }
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(stores.len()));
        let runs: Vec<_> = stores
            .into_iter()
            .map(|s| {
                let start = start.clone();
                tokio::spawn(async move {
                    start.wait().await;
                    s.migrate().await.map(|()| s)
                })
            })
            .collect();
        let mut migrated = Vec::new();
        for run in runs {
            migrated.push(run.await.unwrap().expect("every store migrates"));
        }
        for s in &migrated {
            assert_eq!(s.stats().await.unwrap().registered, 0);
        }
    }
}

#[tokio::test]
async fn a_long_write_ahead_log_starts_over_while_writes_go_on() {
    if pg_admin_url().is_some() {
        return; // SQLite's log only; the PostgreSQL run covers the rest.
    }
    let tmp = tempfile::tempdir().unwrap();
    let url = fresh_database_url(tmp.path()).await;
    let path = sqlite_file(&url).expect("a SQLite file");
    let s = std::sync::Arc::new(connect(&url).await.unwrap().with_wal_restart_frames(50));
    s.migrate().await.unwrap();
    let batch = |from: usize| {
        (from..from + 20)
            .map(|i| registrant(key(&format!("w{i}")), &format!("wc{i}")))
            .collect::<Vec<_>>()
    };
    for b in 0..10 {
        s.insert_registrations(batch(b * 20), 1).await.unwrap();
    }
    let before = wal_salt(&path);
    // Sign-ups keep coming while the upkeep runs.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (s, stop) = (s.clone(), stop.clone());
        tokio::spawn(async move {
            let mut b = 10;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                s.insert_registrations(batch(b * 20), 1).await.unwrap();
                b += 1;
            }
            b
        })
    };
    for _ in 0..3 {
        s.maintenance(1).await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let batches = writer.await.unwrap();
    s.insert_registrations(batch(batches * 20), 1)
        .await
        .unwrap();
    assert_ne!(
        wal_salt(&path),
        before,
        "the log was started over, not only appended to"
    );
    assert_eq!(
        s.stats().await.unwrap().registered,
        (batches as i64 + 1) * 20,
        "nothing lost on the way"
    );
}

#[tokio::test]
async fn the_upkeep_drops_day_old_throttle_windows_and_looks_for_them_once_a_minute() {
    let (s, _tmp) = store().await;
    // The injected clock's time, years from the system's: the upkeep judges
    // "a day old" by it (with the system's time, every window of a test
    // clock was swept, and a log-in throttle could reset mid-test).
    let now: i64 = 1_577_836_800_000; // 2020-01-01T00:00:00Z
    let old = now - 2 * 24 * 3600 * 1000;
    // One hit allowed per window: a second hit in a kept window is refused.
    assert!(s.throttle_hit("old", 1000, 1, old).await.unwrap());
    assert!(s.throttle_hit("recent", 60_000, 1, now).await.unwrap());
    s.maintenance(now).await.unwrap();
    assert!(
        s.throttle_hit("old", 1000, 1, old).await.unwrap(),
        "the two-day-old window was dropped, so it counts from one again"
    );
    assert!(
        !s.throttle_hit("recent", 60_000, 1, now).await.unwrap(),
        "the current window is kept"
    );
    // The upkeep runs several times a second; the sweep waits a minute.
    s.maintenance(now + 1_000).await.unwrap();
    assert!(
        !s.throttle_hit("old", 1000, 1, old).await.unwrap(),
        "not looked for again within the minute"
    );
    s.maintenance(now + 61_000).await.unwrap();
    assert!(
        s.throttle_hit("old", 1000, 1, old).await.unwrap(),
        "looked for again once the minute has passed"
    );
}
