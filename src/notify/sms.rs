//! SMS: written as `.json` files (`file:DIR`) or posted to an HTTP gateway
//! (CONTRACT section 6): 2xx handed over; 429, 5xx and network errors retried,
//! honouring Retry-After; any other 4xx permanent.

use super::{Channel, SendOutcome, safe_file_stem, write_atomically};
use serde_json::json;
use standby_store::OutboxMessage;
use std::path::PathBuf;
use std::time::Duration;

pub enum SmsChannel {
    File(PathBuf),
    Http {
        client: reqwest::Client,
        url: String,
    },
}

impl SmsChannel {
    pub fn new(config: &crate::config::Config) -> anyhow::Result<Self> {
        Ok(match &config.sms {
            crate::config::SmsChannel::File(dir) => SmsChannel::File(dir.clone()),
            crate::config::SmsChannel::Http(url) => SmsChannel::Http {
                client: reqwest::Client::builder()
                    .timeout(Duration::from_secs(20))
                    .connect_timeout(Duration::from_secs(5))
                    .build()?,
                url: url.clone(),
            },
        })
    }
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s.min(3_600)))
}

#[async_trait::async_trait]
impl Channel for SmsChannel {
    fn name(&self) -> &'static str {
        "sms"
    }

    async fn send(&self, msg: &OutboxMessage) -> SendOutcome {
        let payload = json!({ "to": msg.recipient, "body": msg.body, "reference": msg.reference });
        match self {
            SmsChannel::File(dir) => {
                let name = format!("{}.json", safe_file_stem(&msg.reference));
                match write_atomically(dir, &name, payload.to_string().as_bytes()).await {
                    Ok(()) => SendOutcome::HandedOver,
                    Err(e) => SendOutcome::Retry {
                        after: None,
                        error: format!("writing the SMS file failed: {e}"),
                    },
                }
            }
            SmsChannel::Http { client, url } => {
                match client.post(url).json(&payload).send().await {
                    Ok(resp) if resp.status().is_success() => SendOutcome::HandedOver,
                    Ok(resp)
                        if resp.status().as_u16() == 429 || resp.status().is_server_error() =>
                    {
                        SendOutcome::Retry {
                            after: retry_after(resp.headers()),
                            error: format!("gateway answered {}", resp.status().as_u16()),
                        }
                    }
                    Ok(resp) => SendOutcome::Permanent(format!(
                        "gateway refused with {}",
                        resp.status().as_u16()
                    )),
                    Err(e) => SendOutcome::Retry {
                        after: None,
                        error: format!("gateway unreachable: {}", e.without_url()),
                    },
                }
            }
        }
    }
}
