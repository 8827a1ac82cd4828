//! E-mail: written as `.eml` files (`file:DIR`) or sent over SMTP with lettre.

use super::{Channel, SendOutcome, safe_file_stem, write_atomically};
use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use standby_store::OutboxMessage;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpSettings {
    pub implicit_tls: bool,
    pub host: String,
    pub port: u16,
    pub credentials: Option<(String, String)>,
}

/// Parses `smtp://[user:pass@]host:port` or `smtps://…`.
pub fn smtp_settings(url: &str) -> Result<SmtpSettings, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| e.to_string())?;
    let implicit_tls = match parsed.scheme() {
        "smtp" => false,
        "smtps" => true,
        other => return Err(format!("unknown scheme {other:?}")),
    };
    let host = parsed
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or("no host")?
        .to_string();
    let port = parsed.port().ok_or("no port")?;
    let credentials = if parsed.username().is_empty() {
        None
    } else {
        let decode = |s: &str| percent_decode(s);
        Some((
            decode(parsed.username()),
            decode(parsed.password().unwrap_or("")),
        ))
    };
    Ok(SmtpSettings {
        implicit_tls,
        host,
        port,
        credentials,
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Ok(b) = u8::from_str_radix(
                std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                16,
            )
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub enum EmailChannel {
    File {
        dir: PathBuf,
        from: Mailbox,
    },
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        from: Mailbox,
    },
}

impl EmailChannel {
    pub fn new(config: &crate::config::Config) -> anyhow::Result<Self> {
        let from: Mailbox = config.email_from.parse()?;
        Ok(match &config.email {
            crate::config::EmailChannel::File(dir) => EmailChannel::File {
                dir: dir.clone(),
                from,
            },
            crate::config::EmailChannel::Smtp { url } => {
                let s = smtp_settings(url).map_err(anyhow::Error::msg)?;
                let tls_params = TlsParameters::new(s.host.clone())?;
                let tls = if s.implicit_tls {
                    Tls::Wrapper(tls_params)
                } else {
                    Tls::Opportunistic(tls_params)
                };
                let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(s.host.clone())
                    .port(s.port)
                    .tls(tls)
                    .timeout(Some(Duration::from_secs(30)));
                if let Some((user, pass)) = s.credentials {
                    b = b.credentials(Credentials::new(user, pass));
                }
                EmailChannel::Smtp {
                    transport: b.build(),
                    from,
                }
            }
        })
    }

    fn build(&self, msg: &OutboxMessage) -> Result<Message, String> {
        let from = match self {
            EmailChannel::File { from, .. } | EmailChannel::Smtp { from, .. } => from.clone(),
        };
        let to: Mailbox = msg
            .recipient
            .parse()
            .map_err(|_| "the recipient address is not valid".to_string())?;
        Message::builder()
            .from(from)
            .to(to)
            .subject(msg.subject.clone().unwrap_or_default())
            .message_id(Some(format!("<{}@standby>", msg.reference)))
            .header(ContentType::TEXT_PLAIN)
            // 8bit keeps links whole and the .eml files readable as they are;
            // lettre picks another encoding when a line is too long for it.
            .body(
                lettre::message::Body::new_with_encoding(
                    msg.body.clone(),
                    lettre::message::header::ContentTransferEncoding::EightBit,
                )
                .unwrap_or_else(|_| lettre::message::Body::new(msg.body.clone())),
            )
            .map_err(|e| format!("cannot build the message: {e}"))
    }
}

#[async_trait::async_trait]
impl Channel for EmailChannel {
    fn name(&self) -> &'static str {
        "email"
    }

    async fn send(&self, msg: &OutboxMessage) -> SendOutcome {
        let email = match self.build(msg) {
            Ok(m) => m,
            Err(e) => return SendOutcome::Permanent(e),
        };
        match self {
            EmailChannel::File { dir, .. } => {
                let name = format!("{}.eml", safe_file_stem(&msg.reference));
                match write_atomically(dir, &name, &email.formatted()).await {
                    Ok(()) => SendOutcome::HandedOver,
                    Err(e) => SendOutcome::Retry {
                        after: None,
                        error: format!("writing the e-mail file failed: {e}"),
                    },
                }
            }
            EmailChannel::Smtp { transport, .. } => match transport.send(email).await {
                Ok(_) => SendOutcome::HandedOver,
                Err(e) if e.is_permanent() => SendOutcome::Permanent(format!("SMTP refused: {e}")),
                Err(e) => SendOutcome::Retry {
                    after: None,
                    error: format!("SMTP: {e}"),
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_urls() {
        let s = smtp_settings("smtp://127.0.0.1:2525").unwrap();
        assert_eq!(
            (s.implicit_tls, s.host.as_str(), s.port, s.credentials),
            (false, "127.0.0.1", 2525, None)
        );
        let s = smtp_settings("smtps://me%40x.be:p%3Ass@mail.example.lu:465").unwrap();
        assert!(s.implicit_tls);
        assert_eq!(s.credentials, Some(("me@x.be".into(), "p:ss".into())));
        assert!(smtp_settings("smtp://host").is_err());
        assert!(smtp_settings("http://host:25").is_err());
        assert!(smtp_settings("nonsense").is_err());
    }
}
