//! SMS texts in the GSM 03.38 alphabet. One character outside it (an en
//! dash, a circumflex) makes the whole message UCS-2: 70 characters a
//! segment instead of 160, and an invitation cost 4 to 5 segments instead
//! of 2. Texts are kept in the alphabet, and their segments counted.

/// The GSM 03.38 basic character set (one septet each).
const BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// The extension set (two septets each: an escape, then the character).
const EXTENSION: &str = "^{}\\[~]|€\u{c}";

fn in_basic(c: char) -> bool {
    BASIC.contains(c)
}

fn in_extension(c: char) -> bool {
    EXTENSION.contains(c)
}

/// Is every character of `text` in the GSM 03.38 alphabet?
pub fn is_gsm7(text: &str) -> bool {
    text.chars().all(|c| in_basic(c) || in_extension(c))
}

/// The nearest text in the GSM alphabet: typographic dashes, quotes and
/// spaces become their plain forms, letters lose the accents the alphabet
/// lacks (ô → o, ç → c, ë → e), anything else becomes `?`.
pub fn to_gsm7(text: &str) -> String {
    text.chars()
        .map(|c| {
            if in_basic(c) || in_extension(c) {
                return c.to_string();
            }
            match c {
                '–' | '—' | '‐' | '‑' | '−' => "-".into(),
                '‘' | '’' | '‚' | '′' => "'".into(),
                '“' | '”' | '„' | '«' | '»' => "\"".into(),
                '\u{a0}' | '\u{202f}' | '\u{2009}' | '\t' => " ".into(),
                '…' => "...".into(),
                'á' | 'â' | 'ã' | 'ā' => "a".into(),
                'À' | 'Á' | 'Â' | 'Ã' => "A".into(),
                'ê' | 'ë' | 'ē' => "e".into(),
                'È' | 'Ê' | 'Ë' => "E".into(),
                'í' | 'î' | 'ï' => "i".into(),
                'Ì' | 'Í' | 'Î' | 'Ï' => "I".into(),
                'ó' | 'ô' | 'õ' | 'œ' => {
                    if c == 'œ' {
                        "oe".into()
                    } else {
                        "o".into()
                    }
                }
                'Ò' | 'Ó' | 'Ô' | 'Õ' => "O".into(),
                'Œ' => "OE".into(),
                'ú' | 'û' => "u".into(),
                'Ù' | 'Ú' | 'Û' => "U".into(),
                'ç' => "c".into(),
                'ý' | 'ÿ' => "y".into(),
                'Ý' | 'Ÿ' => "Y".into(),
                'ĳ' => "ij".into(),
                'Ĳ' => "IJ".into(),
                _ => "?".into(),
            }
        })
        .collect()
}

/// How many segments `text` takes: GSM-7 160 septets alone, 153 a segment
/// when concatenated; UCS-2 70 characters alone, 67 when concatenated.
pub fn segments(text: &str) -> usize {
    if is_gsm7(text) {
        let septets: usize = text
            .chars()
            .map(|c| if in_extension(c) { 2 } else { 1 })
            .sum();
        if septets <= 160 {
            1
        } else {
            septets.div_ceil(153)
        }
    } else {
        let units: usize = text.chars().map(char::len_utf16).sum();
        if units <= 70 { 1 } else { units.div_ceil(67) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alphabet_and_its_segments() {
        assert!(is_gsm7("Standby : une dose pour vous à Heysel, répondez"));
        assert!(is_gsm7("Größe Übung Äpfel ß"));
        assert!(!is_gsm7("09:00–17:00"), "an en dash is not GSM");
        assert!(!is_gsm7("Hôpital"));
        assert_eq!(segments(&"a".repeat(160)), 1);
        assert_eq!(segments(&"a".repeat(161)), 2);
        assert_eq!(segments(&"a".repeat(306)), 2);
        assert_eq!(segments(&"a".repeat(307)), 3);
        // The extension set counts twice.
        assert_eq!(segments(&"€".repeat(80)), 1);
        assert_eq!(segments(&"€".repeat(81)), 2);
        // One character outside the alphabet: UCS-2.
        assert_eq!(segments(&format!("{}–", "a".repeat(69))), 1);
        assert_eq!(segments(&format!("{}–", "a".repeat(70))), 2);
    }

    #[test]
    fn texts_are_brought_into_the_alphabet() {
        assert_eq!(to_gsm7("09:00–17:00"), "09:00-17:00");
        assert_eq!(
            to_gsm7("Hôpital Sainte-Thérèse « Œuvre » ça"),
            "Hopital Sainte-Thérèse \" OEuvre \" ca"
        );
        assert_eq!(to_gsm7("Zürich, Île, naïve"), "Zürich, Ile, naive");
        assert_eq!(to_gsm7("日本"), "??");
        for text in ["Crèche – l’été", "Noël « ici »", "Ærø… ĳs"] {
            assert!(is_gsm7(&to_gsm7(text)), "{text}");
        }
    }
}
