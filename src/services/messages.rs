//! The texts of messages to registrants, in their language.

use crate::i18n::t;
use standby_domain::Language;
use standby_store::NewMessage;

/// Wraps text at 72 columns on spaces; a word longer than that (a link)
/// stays whole on its own line.
pub fn wrap(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let mut width = 0;
        for (j, word) in line.split(' ').enumerate() {
            let w = word.chars().count();
            if j > 0 && width + 1 + w > 72 {
                out.push('\n');
                width = 0;
            } else if j > 0 {
                out.push(' ');
                width += 1;
            }
            out.push_str(word);
            width += w;
        }
    }
    out
}

pub struct ConfirmationMail<'a> {
    pub lang: Language,
    pub first_name: &'a str,
    pub email: &'a str,
    pub confirm_link: String,
    pub me_link: String,
}

/// The fixed parts of the confirmation e-mail in one language, wrapped once.
/// `wrap` works line by line, so wrapping each part apart gives the same text
/// as wrapping the whole; a sign-up then only wraps its greeting.
struct ConfirmationTexts {
    subject: String,
    greeting: String,
    body: String,
    ignore: String,
    manage: String,
    signature: String,
}

static CONFIRMATION_TEXTS: std::sync::LazyLock<Vec<(Language, ConfirmationTexts)>> =
    std::sync::LazyLock::new(|| {
        Language::ALL
            .iter()
            .map(|&l| {
                (
                    l,
                    ConfirmationTexts {
                        subject: t(l, "mail.confirm.subject"),
                        greeting: t(l, "mail.greeting"),
                        body: wrap(&t(l, "mail.confirm.body")),
                        ignore: wrap(&t(l, "mail.confirm.ignore")),
                        manage: wrap(&t(l, "mail.manage")),
                        signature: wrap(&t(l, "mail.signature")),
                    },
                )
            })
            .collect()
    });

impl ConfirmationMail<'_> {
    /// Every sign-up renders one: kept cheap (see `ConfirmationTexts`).
    pub fn to_message(&self) -> NewMessage {
        let texts = CONFIRMATION_TEXTS
            .iter()
            .find(|(l, _)| *l == self.lang)
            .map(|(_, texts)| texts)
            .unwrap_or(&CONFIRMATION_TEXTS[0].1);
        let greeting = wrap(&texts.greeting.replace("{name}", self.first_name));
        let mut body = String::with_capacity(
            greeting.len()
                + texts.body.len()
                + texts.ignore.len()
                + texts.manage.len()
                + texts.signature.len()
                + self.confirm_link.len()
                + self.me_link.len()
                + 16,
        );
        for part in [
            greeting.as_str(),
            "\n\n",
            &texts.body,
            "\n",
            &wrap(&self.confirm_link),
            "\n\n",
            &texts.ignore,
            "\n\n",
            &texts.manage,
            "\n",
            &wrap(&self.me_link),
            "\n\n",
            &texts.signature,
            "\n",
        ] {
            body.push_str(part);
        }
        NewMessage {
            reference: crate::security::random_reference("confirm"),
            channel: "email".into(),
            kind: "confirmation".into(),
            registrant_id: None,
            recipient: self.email.to_string(),
            subject: Some(texts.subject.clone()),
            body,
        }
    }
}

/// How an offer's time window reads in a message: local time of the centre.
pub fn window_text(starts_ms: i64, ends_ms: i64, time_zone: &str) -> String {
    let tz = jiff::tz::TimeZone::get(time_zone).unwrap_or(jiff::tz::TimeZone::UTC);
    let at = |ms: i64| {
        jiff::Timestamp::from_millisecond(ms)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
            .to_zoned_datetime(tz.clone())
    };
    let (s, e) = (at(starts_ms), at(ends_ms));
    if s.date() == e.date() {
        format!(
            "{} {}–{}",
            s.strftime("%Y-%m-%d"),
            s.strftime("%H:%M"),
            e.strftime("%H:%M")
        )
    } else {
        format!(
            "{} – {}",
            s.strftime("%Y-%m-%d %H:%M"),
            e.strftime("%Y-%m-%d %H:%M")
        )
    }
}

pub struct Place<'a> {
    pub center: &'a str,
    pub address: &'a str,
    pub window: String,
}

fn fill(text: String, place: &Place<'_>) -> String {
    text.replace("{center}", place.center)
        .replace("{address}", place.address)
        .replace("{window}", &place.window)
}

fn email(reference: String, kind: &str, to: &str, subject: String, body: String) -> NewMessage {
    NewMessage {
        reference,
        channel: "email".into(),
        kind: kind.into(),
        registrant_id: None,
        recipient: to.into(),
        subject: Some(subject),
        body: wrap(&body),
    }
}

/// An SMS, its text brought into the GSM alphabet (one character outside
/// it would make the whole message UCS-2, at 70 characters a segment).
fn sms(reference: String, kind: &str, to: &str, body: String) -> NewMessage {
    NewMessage {
        reference,
        channel: "sms".into(),
        kind: kind.into(),
        registrant_id: None,
        recipient: to.into(),
        subject: None,
        body: standby_domain::sms::to_gsm7(&body),
    }
}

/// The invitation SMS in at most [`INVITATION_SMS_SEGMENTS`] segments: a
/// centre name too long for them is cut (the links and the time never are).
pub fn invitation_sms(
    lang: Language,
    place: &Place<'_>,
    minutes: i64,
    link: &str,
    me: &str,
    code: &str,
) -> String {
    let text_with = |center: &str| {
        let place = Place {
            center,
            address: place.address,
            window: place.window.clone(),
        };
        standby_domain::sms::to_gsm7(
            &fill(t(lang, "sms.invite"), &place)
                .replace("{minutes}", &minutes.to_string())
                .replace("{link}", link)
                .replace("{me}", me)
                .replace("{code}", code),
        )
    };
    let mut center: String = place.center.to_string();
    let mut text = text_with(&center);
    while standby_domain::sms::segments(&text) > INVITATION_SMS_SEGMENTS
        && center.chars().count() > 8
    {
        let keep = center.chars().count() - 4;
        center = format!(
            "{}...",
            center
                .chars()
                .take(keep.saturating_sub(3))
                .collect::<String>()
                .trim_end()
        );
        text = text_with(&center);
    }
    text
}

/// What an invitation SMS may cost.
pub const INVITATION_SMS_SEGMENTS: usize = 2;

/// The invitation, by e-mail and by SMS where a phone is known. Both carry
/// the same reference stem, each its own reference.
#[allow(clippy::too_many_arguments)]
pub fn invitation(
    lang: Language,
    first_name: &str,
    email_to: &str,
    phone: Option<&str>,
    place: &Place<'_>,
    minutes: i64,
    link: &str,
    me: &str,
    code: &str,
) -> Vec<NewMessage> {
    let stem = crate::security::random_reference("inv");
    let body = format!(
        "{}\n\n{}\n{}\n\n{}\n\n{}\n{}\n\n{}\n",
        t(lang, "mail.greeting").replace("{name}", first_name),
        fill(t(lang, "mail.invite.body"), place).replace("{minutes}", &minutes.to_string()),
        link,
        t(lang, "mail.invite.note"),
        t(lang, "mail.manage"),
        me,
        t(lang, "mail.signature"),
    );
    let mut out = vec![email(
        format!("{stem}-e"),
        "invitation",
        email_to,
        t(lang, "mail.invite.subject"),
        body,
    )];
    if let Some(phone) = phone {
        let text = invitation_sms(lang, place, minutes, link, me, code);
        out.push(sms(format!("{stem}-s"), "invitation", phone, text));
    }
    out
}

pub fn booking(
    lang: Language,
    first_name: &str,
    email_to: Option<&str>,
    phone: Option<&str>,
    place: &Place<'_>,
    me: &str,
) -> Vec<NewMessage> {
    let stem = crate::security::random_reference("book");
    let mut out = Vec::new();
    if let Some(to) = email_to {
        let body = format!(
            "{}\n\n{}\n\n{}\n{}\n\n{}\n",
            t(lang, "mail.greeting").replace("{name}", first_name),
            fill(t(lang, "mail.booked.body"), place),
            t(lang, "mail.manage"),
            me,
            t(lang, "mail.signature"),
        );
        out.push(email(
            format!("{stem}-e"),
            "booking",
            to,
            t(lang, "mail.booked.subject"),
            body,
        ));
    }
    if let Some(phone) = phone {
        out.push(sms(
            format!("{stem}-s"),
            "booking",
            phone,
            fill(t(lang, "sms.booked"), place).replace("{me}", me),
        ));
    }
    out
}

pub fn paused(
    lang: Language,
    first_name: &str,
    email_to: Option<&str>,
    me: &str,
) -> Vec<NewMessage> {
    let Some(to) = email_to else {
        return Vec::new();
    };
    let body = format!(
        "{}\n\n{}\n{}\n\n{}\n",
        t(lang, "mail.greeting").replace("{name}", first_name),
        t(lang, "mail.paused.body"),
        me,
        t(lang, "mail.signature"),
    );
    vec![email(
        crate::security::random_reference("paused"),
        "paused",
        to,
        t(lang, "mail.paused.subject"),
        body,
    )]
}

/// The answer by SMS to a reply that could not book: `key` is
/// `sms.reply.full`, `sms.reply.expired` or `sms.reply.closed`.
pub fn reply_sms(lang: Language, key: &str, phone: &str, registrant_id: i64) -> NewMessage {
    let mut m = sms(
        crate::security::random_reference("reply"),
        "reply",
        phone,
        t(lang, key),
    );
    m.registrant_id = Some(registrant_id);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invitation_sms_is_gsm_and_at_most_two_segments_in_every_language() {
        let token = "0123456789ab".to_string() + &"x".repeat(32);
        let link = format!("https://waitlist.example.lu/i/{token}");
        let me = format!("https://waitlist.example.lu/me/{token}");
        let window = window_text(1_795_597_200_000, 1_795_626_000_000, "Europe/Brussels");
        assert!(window.contains('–'), "the window's own dash: {window}");
        for center in [
            "Heysel",
            "Centre de vaccination Heysel",
            "Hôpital universitaire Saint-Pierre, site César De Paepe, entrée rue Haute",
        ] {
            for lang in Language::ALL {
                let place = Place {
                    center,
                    address: "Place de Belgique 1, 1020 Bruxelles",
                    window: window.clone(),
                };
                let text = invitation_sms(lang, &place, 30, &link, &me, "482917");
                assert!(standby_domain::sms::is_gsm7(&text), "{lang:?}: {text}");
                let n = standby_domain::sms::segments(&text);
                assert!(
                    n <= 2,
                    "{lang:?}, {center}: {n} segments, {} characters: {text}",
                    text.chars().count()
                );
                assert!(
                    text.contains(&link) && text.contains(&me) && text.contains("482917"),
                    "{text}"
                );
            }
        }
        // Before: the en dash alone made the same text UCS-2.
        let place = Place {
            center: "Heysel",
            address: "",
            window: window.clone(),
        };
        let raw = fill(t(Language::Fr, "sms.invite"), &place)
            .replace("{minutes}", "30")
            .replace("{link}", &link)
            .replace("{me}", &me)
            .replace("{code}", "482917");
        assert!(standby_domain::sms::segments(&raw) >= 4, "{raw}");
    }

    #[test]
    fn wrapping_keeps_words_and_links_whole() {
        let long = "word ".repeat(40);
        for line in wrap(&long).lines() {
            assert!(line.chars().count() <= 72);
        }
        let link = format!("http://example.be/{}", "x".repeat(90));
        assert_eq!(wrap(&format!("see {link}")), format!("see\n{link}"));
        assert_eq!(wrap("a\n\nb"), "a\n\nb");
    }

    #[test]
    fn confirmation_mail_is_the_whole_text_wrapped() {
        // The pre-wrapped parts must give exactly what wrapping the whole
        // message gives, for short and long names and links.
        for lang in Language::ALL {
            for name in ["Anne", &"Marie-Christine ".repeat(12)] {
                let m = ConfirmationMail {
                    lang,
                    first_name: name,
                    email: "anne@example.be",
                    confirm_link: format!("http://x/confirm/{}", "a".repeat(80)),
                    me_link: "http://x/me/def".into(),
                };
                let whole = wrap(&format!(
                    "{}\n\n{}\n{}\n\n{}\n\n{}\n{}\n\n{}\n",
                    t(lang, "mail.greeting").replace("{name}", name),
                    t(lang, "mail.confirm.body"),
                    m.confirm_link,
                    t(lang, "mail.confirm.ignore"),
                    t(lang, "mail.manage"),
                    m.me_link,
                    t(lang, "mail.signature"),
                ));
                let msg = m.to_message();
                assert_eq!(msg.body, whole);
                assert_eq!(msg.subject, Some(t(lang, "mail.confirm.subject")));
            }
        }
    }

    #[test]
    fn confirmation_mail_carries_both_links_in_every_language() {
        for lang in Language::ALL {
            let m = ConfirmationMail {
                lang,
                first_name: "Anne",
                email: "anne@example.be",
                confirm_link: "http://x/confirm/abc".into(),
                me_link: "http://x/me/def".into(),
            }
            .to_message();
            assert!(m.body.contains("http://x/confirm/abc") && m.body.contains("http://x/me/def"));
            assert!(m.body.contains("Anne") && !m.body.contains('⟦'));
            assert_eq!(m.channel, "email");
            assert!(m.reference.starts_with("confirm-"));
        }
    }
}
