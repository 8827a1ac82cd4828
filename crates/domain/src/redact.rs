//! Masking contact data in texts that come from outside, such as an SMTP
//! server's or an SMS gateway's error reply, which often echo the
//! recipient: what is stored or logged of them names no address or number.

/// The text with every e-mail address replaced by `<address>` and every run
/// of seven digits or more (a phone number, with its `+`, spaces, dots,
/// dashes, slashes and brackets) by `<number>`. SMTP's own codes
/// (`550 5.1.1`) have fewer digits and stay readable.
pub fn mask_contacts(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        if let Some(end) = address_at(&chars, i) {
            out.push_str("<address>");
            i = end;
        } else if let Some(end) = number_at(&chars, i) {
            out.push_str("<number>");
            i = end;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

fn local_char(c: char) -> bool {
    c.is_alphanumeric() || "._%+-'!#$&*/=?^`{|}~".contains(c)
}

fn domain_char(c: char) -> bool {
    c.is_alphanumeric() || c == '.' || c == '-'
}

/// An address starting at `i` (at a word's start): where it ends.
fn address_at(chars: &[char], i: usize) -> Option<usize> {
    if i > 0 && local_char(chars[i - 1]) {
        return None;
    }
    let mut at = i;
    while at < chars.len() && local_char(chars[at]) {
        at += 1;
    }
    if at == i || chars.get(at) != Some(&'@') {
        return None;
    }
    let mut end = at + 1;
    while end < chars.len() && domain_char(chars[end]) {
        end += 1;
    }
    (end > at + 1).then_some(end)
}

/// A phone-like run of digits starting at `i`: where it ends.
fn number_at(chars: &[char], i: usize) -> Option<usize> {
    let starts = chars[i] == '+' || chars[i] == '(' || chars[i].is_ascii_digit();
    if !starts || (i > 0 && chars[i - 1].is_alphanumeric()) {
        return None;
    }
    let (mut end, mut digits, mut last_digit) = (i, 0, i);
    while end < chars.len() {
        let c = chars[end];
        if c.is_ascii_digit() {
            digits += 1;
            last_digit = end + 1;
        } else if !(" .-/()".contains(c) || (c == '+' && end == i)) {
            break;
        }
        end += 1;
    }
    (digits >= 7).then_some(last_digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_numbers_are_masked_and_the_rest_kept() {
        assert_eq!(
            mask_contacts("450 4.2.1 <anne.dupont+x@mail.example.be>: mailbox busy"),
            "450 4.2.1 <<address>>: mailbox busy"
        );
        assert_eq!(
            mask_contacts("recipient Anne.Dupont@Example.BE refused"),
            "recipient <address> refused"
        );
        assert_eq!(
            mask_contacts("number +32 470 12 34 56 unreachable (code 21)"),
            "number <number> unreachable (code 21)"
        );
        assert_eq!(
            mask_contacts("to=+352621123456, try again"),
            "to=<number>, try again"
        );
        assert_eq!(
            mask_contacts("0470/12.34.56 is not mobile"),
            "<number> is not mobile"
        );
        // SMTP codes, short numbers and a lone @ stay readable.
        assert_eq!(
            mask_contacts("550 5.1.1 user unknown @ line 12"),
            "550 5.1.1 user unknown @ line 12"
        );
        assert_eq!(mask_contacts("HTTP 503 after 30 s"), "HTTP 503 after 30 s");
    }

    #[test]
    fn nothing_of_a_masked_contact_survives() {
        for (text, secret) in [
            ("x person17@example.be y", "person17"),
            ("x person17@example.be y", "example.be"),
            ("sms to +32470123456 failed", "470123456"),
            ("sms to +32 (0)470 12-34-56 failed", "12-34-56"),
        ] {
            let masked = mask_contacts(text);
            assert!(!masked.contains(secret), "{masked}");
        }
    }
}
