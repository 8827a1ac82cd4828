//! The outbox: every message to a person is a row, queued in the same
//! transaction as the state change that calls for it, then handed to its
//! channel by a dispatcher that paces, retries with back-off and keeps the
//! same `reference` on every try. A claim is a lease: if the process dies,
//! another takes the message over when the lease runs out.

pub mod circuit;
pub mod email;
pub mod sms;

use crate::app::AppState;
use standby_store::OutboxMessage;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// After this many tries a message is given up as undeliverable.
pub const MAX_ATTEMPTS: i64 = 12;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// The channel accepted it (SMTP accepted, gateway answered 2xx, file written).
    HandedOver,
    /// Try again later; `after` is the channel's own wish (Retry-After).
    Retry {
        after: Option<Duration>,
        error: String,
    },
    /// Never going to work (bad address, 4xx from the gateway).
    Permanent(String),
}

#[async_trait::async_trait]
pub trait Channel: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    async fn send(&self, msg: &OutboxMessage) -> SendOutcome;
}

/// Exponential back-off with jitter: 1 s, 2 s, 4 s… capped at 30 minutes.
pub fn backoff_ms(attempts: i64, jitter: f64) -> i64 {
    let exp = attempts.clamp(1, 20) - 1;
    let base = (1_000i64 << exp).min(1_800_000);
    let jitter = jitter.clamp(0.0, 1.0);
    base + (base as f64 * 0.25 * jitter) as i64
}

/// Runs one channel's dispatcher until the process ends: claims due
/// messages, starts each at its slot of the channel's rate, and lets up to
/// `in_flight` be on their way at once (one at a time, a gateway answering
/// in 150 ms capped the channel at under 7 a second whatever its rate).
pub async fn run_channel(
    state: AppState,
    channel: Arc<dyn Channel>,
    rate_per_s: u32,
    in_flight: usize,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(in_flight.max(1)));
    let spacing = Duration::from_secs_f64(1.0 / f64::from(rate_per_s.max(1)));
    let mut next_slot = Instant::now();
    let name = channel.name();
    loop {
        let now = state.clock.now_ms();
        let claimed = state
            .store
            .claim_messages(
                name,
                &state.worker_id,
                now,
                state.config.lease_ms,
                i64::from(rate_per_s.clamp(1, 500)),
            )
            .await;
        let batch = match claimed {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(channel = name, error = %e, "claiming messages failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if batch.is_empty() {
            // Sleep until woken by a new message or the next retry is due.
            let wait = match state.store.next_message_due(name).await {
                Ok(Some(at)) => Duration::from_millis(
                    u64::try_from(at - state.clock.now_ms())
                        .unwrap_or(0)
                        .clamp(20, 1_000),
                ),
                _ => Duration::from_millis(1_000),
            };
            let _ = tokio::time::timeout(wait, state.outbox_wake.notified()).await;
            continue;
        }
        for msg in batch {
            tokio::time::sleep_until(next_slot).await;
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            next_slot = next_slot.max(Instant::now()) + spacing;
            let (state, channel) = (state.clone(), channel.clone());
            tokio::spawn(async move {
                deliver(&state, channel.as_ref(), &msg).await;
                drop(slot);
            });
        }
        // Messages still on their way are `sending` under this process's
        // lease: the next claim does not take them again.
    }
}

async fn deliver(state: &AppState, channel: &dyn Channel, msg: &OutboxMessage) {
    // A server's or gateway's reply often echoes the recipient: what is
    // logged and stored of it names no address or number.
    let outcome = match channel.send(msg).await {
        SendOutcome::Retry { after, error } => SendOutcome::Retry {
            after,
            error: standby_domain::redact::mask_contacts(&error),
        },
        SendOutcome::Permanent(error) => {
            SendOutcome::Permanent(standby_domain::redact::mask_contacts(&error))
        }
        handed_over => handed_over,
    };
    let now = state.clock.now_ms();
    let store = &state.store;
    let worker = &state.worker_id;
    let circuit = state.circuits.of(channel.name());
    match &outcome {
        SendOutcome::HandedOver => circuit.handed_over(now),
        SendOutcome::Retry { .. } => circuit.failed(),
        // A refused address is the message's fault, not the channel's.
        SendOutcome::Permanent(_) => {}
    }
    let result = match &outcome {
        SendOutcome::HandedOver => {
            crate::metrics::message(channel.name(), "sent");
            store.message_sent(msg.id, worker, now).await
        }
        SendOutcome::Retry { error, .. } if msg.attempts >= MAX_ATTEMPTS => {
            tracing::warn!(channel = channel.name(), reference = %msg.reference, attempts = msg.attempts, error = %error, "message undeliverable after retries");
            crate::metrics::message(channel.name(), "failed");
            store.message_failed(msg.id, worker, now, error).await
        }
        SendOutcome::Retry { after, error } => {
            let backoff = backoff_ms(msg.attempts, rand::random::<f64>());
            let wish = after
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                .unwrap_or(0);
            tracing::info!(channel = channel.name(), reference = %msg.reference, attempts = msg.attempts, error = %error, "message will be retried");
            crate::metrics::message(channel.name(), "retried");
            store
                .message_retry(msg.id, worker, now + backoff.max(wish), error)
                .await
        }
        SendOutcome::Permanent(error) => {
            tracing::warn!(channel = channel.name(), reference = %msg.reference, error = %error, "message refused permanently");
            crate::metrics::message(channel.name(), "failed");
            store.message_failed(msg.id, worker, now, error).await
        }
    };
    if let Err(e) = result {
        // The lease runs out and the message is retried with the same reference.
        tracing::error!(channel = channel.name(), reference = %msg.reference, error = %e, "recording a message's outcome failed");
    }
}

/// Writes `bytes` to `dir/name` atomically (temporary file, then rename), so a
/// reader never sees half a message and a retry simply replaces it.
pub async fn write_atomically(
    dir: &std::path::Path,
    name: &str,
    bytes: &[u8],
) -> std::io::Result<()> {
    tokio::fs::create_dir_all(dir).await?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(name);
    let mut f = tokio::fs::File::create(&tmp).await?;
    tokio::io::AsyncWriteExt::write_all(&mut f, bytes).await?;
    f.sync_all().await?;
    drop(f);
    tokio::fs::rename(&tmp, &path).await
}

/// A message reference may name a file: only letters, digits and dashes.
pub fn safe_file_stem(reference: &str) -> String {
    reference
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff_ms(1, 0.0), 1_000);
        assert_eq!(backoff_ms(2, 0.0), 2_000);
        assert_eq!(backoff_ms(5, 0.0), 16_000);
        assert_eq!(backoff_ms(40, 0.0), 1_800_000);
        assert_eq!(backoff_ms(1, 1.0), 1_250);
        assert!(backoff_ms(3, 0.5) > backoff_ms(3, 0.0));
    }

    #[test]
    fn file_stems_are_safe() {
        assert_eq!(safe_file_stem("reg-ab12"), "reg-ab12");
        assert_eq!(safe_file_stem("../etc/passwd"), "___etc_passwd");
    }
}
