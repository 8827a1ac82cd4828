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

impl ConfirmationMail<'_> {
    pub fn to_message(&self) -> NewMessage {
        let l = self.lang;
        let body = format!(
            "{}\n\n{}\n{}\n\n{}\n\n{}\n{}\n\n{}\n",
            t(l, "mail.greeting").replace("{name}", self.first_name),
            t(l, "mail.confirm.body"),
            self.confirm_link,
            t(l, "mail.confirm.ignore"),
            t(l, "mail.manage"),
            self.me_link,
            t(l, "mail.signature"),
        );
        NewMessage {
            reference: crate::security::random_reference("confirm"),
            channel: "email".into(),
            kind: "confirmation".into(),
            registrant_id: None,
            recipient: self.email.to_string(),
            subject: Some(t(l, "mail.confirm.subject")),
            body: wrap(&body),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
