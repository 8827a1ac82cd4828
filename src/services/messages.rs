//! The texts of messages to registrants, in their language.

use crate::i18n::t;
use standby_domain::Language;
use standby_store::NewMessage;

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
            body,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
