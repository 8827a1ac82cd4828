//! `standby demo`: a believable data set to try everything with.

use crate::config::Config;
use crate::security::{hash_password, national_id_hash, random_token, token_hash};
use rand::Rng;
use rand::seq::IndexedRandom;
use standby_domain::national_id::{luhn_check_digit, verhoeff_check_digit};
use standby_domain::{Clock, Country, NationalId};
use standby_store::{NewCenter, NewRegistrant, NewUser, Store, VaccineRecord};

pub struct Summary {
    pub already_present: bool,
    pub logins: Vec<(String, String, String)>,
    pub registrants: u32,
}

impl Summary {
    pub fn print(&self) {
        if self.already_present {
            println!(
                "The demo data set is already in this database; its log-ins were printed when it was loaded."
            );
            return;
        }
        println!("Demo data loaded: {} registrants.", self.registrants);
        println!("Staff log-ins (shown once, keep them):");
        for (email, password, role) in &self.logins {
            println!("  {role:<28} {email:<32} {password}");
        }
    }
}

const CENTERS: [(&str, &str, &str, &str, Country); 5] = [
    (
        "Centre de vaccination Heysel",
        "Avenue de l'Impératrice Charlotte 6, Bruxelles",
        "1020",
        "Europe/Brussels",
        Country::Be,
    ),
    (
        "Vaccinatiecentrum Antwerp Expo",
        "Jan Van Rijswijcklaan 191, Antwerpen",
        "2020",
        "Europe/Brussels",
        Country::Be,
    ),
    (
        "Centre de vaccination Liège",
        "Allée du Bol d'Air 13, Liège",
        "4031",
        "Europe/Brussels",
        Country::Be,
    ),
    (
        "Centre de vaccination Victor Hugo",
        "Avenue Victor Hugo 4, Luxembourg",
        "1750",
        "Europe/Luxembourg",
        Country::Lu,
    ),
    (
        "Centre de vaccination Esch-sur-Alzette",
        "Boulevard Charles de Gaulle 1, Esch-sur-Alzette",
        "4170",
        "Europe/Luxembourg",
        Country::Lu,
    ),
];

const VACCINES: [(&str, &str, i64, i64); 4] = [
    ("PFZ", "Comirnaty (Pfizer-BioNTech)", 12, 120),
    ("MOD", "Spikevax (Moderna)", 18, 120),
    ("AZ", "Vaxzevria (AstraZeneca)", 41, 120),
    ("JNJ", "Jcovden (Janssen)", 41, 120),
];

const FIRST: [&str; 16] = [
    "Anne", "Luc", "Marie", "Jan", "Sofia", "Pierre", "Lotte", "Mathis", "Emma", "Noah", "Léa",
    "Tom", "Chloé", "Lars", "Inès", "Georges",
];
const LAST: [&str; 16] = [
    "Dupont", "Peeters", "Janssens", "Maes", "Schmit", "Muller", "Weber", "Lambert", "Dubois",
    "Hoffmann", "Wagner", "Claes", "Martin", "Reuter", "Goossens", "Thill",
];

/// A valid Belgian national register number for a birth date.
pub fn belgian_id(year: i32, month: u32, day: u32, seq: u32) -> String {
    let body = format!("{:02}{month:02}{day:02}{seq:03}", year % 100);
    let n: u64 = body.parse().expect("digits");
    let n = if year >= 2000 { n + 2_000_000_000 } else { n };
    format!("{body}{:02}", 97 - n % 97)
}

/// A valid Luxembourg matricule for a birth date.
pub fn luxembourg_id(year: i32, month: u32, day: u32, seq: u32) -> String {
    let body = format!("{year:04}{month:02}{day:02}{seq:03}");
    format!(
        "{body}{}{}",
        luhn_check_digit(&body),
        verhoeff_check_digit(&body)
    )
}

fn password() -> String {
    crate::security::random_secret()[..16].to_string()
}

pub async fn seed(
    store: &dyn Store,
    config: &Config,
    clock: &dyn Clock,
    registrants: u32,
) -> anyhow::Result<Summary> {
    if store.user_by_email("admin@standby.test").await?.is_some() {
        return Ok(Summary {
            already_present: true,
            logins: Vec::new(),
            registrants: 0,
        });
    }
    let now = clock.now_ms();
    let actor = "demo";
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::from_rng(&mut rand::rng());
    for (code, name, min, max) in VACCINES {
        let v = VaccineRecord {
            code: code.into(),
            name: name.into(),
            min_age: min,
            max_age: max,
        };
        match store.create_vaccine(&v, actor, now).await {
            Ok(()) | Err(standby_store::StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut logins = Vec::new();
    let admin_pw = password();
    let admin = NewUser {
        email: "admin@standby.test".into(),
        password_hash: hash_password(&admin_pw)?,
        role: "admin".into(),
        center_id: None,
    };
    store.create_user(&admin, actor, now).await?;
    logins.push((
        "admin@standby.test".to_string(),
        admin_pw,
        "admin".to_string(),
    ));
    let mut centers = Vec::new();
    for (i, (name, address, postal, tz, country)) in CENTERS.iter().enumerate() {
        let c = store
            .create_center(
                &NewCenter {
                    name: (*name).into(),
                    address: (*address).into(),
                    postal_code: (*postal).into(),
                    time_zone: (*tz).into(),
                    // A demo is tried at any hour: its centres keep no quiet
                    // hours (real centres default to 21:00-08:00).
                    quiet_hours: Some("none".into()),
                },
                actor,
                now,
            )
            .await?;
        let picked: Vec<&str> = VACCINES
            .iter()
            .enumerate()
            .filter(|(j, _)| *j == 0 || rng.random_bool(0.5))
            .map(|(_, v)| v.0)
            .collect();
        for code in picked {
            let doses = rng.random_range(3..=12) * 100;
            store.record_delivery(c.id, code, doses, actor, now).await?;
        }
        let email = format!("staff{}@standby.test", i + 1);
        let pw = password();
        let user = NewUser {
            email: email.clone(),
            password_hash: hash_password(&pw)?,
            role: "staff".into(),
            center_id: Some(c.id),
        };
        store.create_user(&user, actor, now).await?;
        logins.push((email, pw, format!("staff, centre {}", c.id)));
        centers.push((c.id, *country));
    }
    let today = jiff::tz::Offset::UTC.to_datetime(clock.now()).date();
    let mut batch = Vec::new();
    for i in 0..registrants {
        let country = if rng.random_bool(0.7) {
            Country::Be
        } else {
            Country::Lu
        };
        let year = rng.random_range(1930..=2008);
        let (month, day) = (rng.random_range(1..=12u32), rng.random_range(1..=28u32));
        let seq = 1 + (i % 997);
        let raw = match country {
            Country::Be => belgian_id(year, month, day, seq),
            Country::Lu => luxembourg_id(year, month, day, seq),
        };
        let Ok(id) = NationalId::parse(country, &raw, today) else {
            continue;
        };
        let home: Vec<i64> = centers
            .iter()
            .filter(|(_, c)| *c == country)
            .map(|(id, _)| *id)
            .collect();
        let chosen: Vec<i64> = if rng.random_bool(0.4) {
            Vec::new()
        } else {
            {
                let n = rng.random_range(1..=home.len());
                home.choose_multiple(&mut rng, n)
            }
            .copied()
            .collect()
        };
        let mut availability = Vec::new();
        if rng.random_bool(0.6) {
            for d in 0..7i64 {
                if rng.random_bool(0.5) {
                    let from = rng.random_range(7..=12i64) * 60;
                    availability.push((d, from, from + rng.random_range(2..=8i64) * 60));
                }
            }
        }
        let first = *FIRST.choose(&mut rng).expect("names");
        let last = *LAST.choose(&mut rng).expect("names");
        let confirm = random_token();
        // Most have confirmed already; their order on the list is their confirmation time.
        let confirmed_at = rng.random_bool(0.85).then_some(now + i64::from(i));
        batch.push(NewRegistrant {
            nid_hash: national_id_hash(&config.secret, &id.canonical()),
            country: country.as_str().into(),
            birth_ymd: id.birth().latest_ymd(),
            title: None,
            first_name: first.into(),
            last_name: last.into(),
            email: format!(
                "{}.{}.{i}@example.org",
                first.to_lowercase(),
                last.to_lowercase()
            ),
            phone: rng
                .random_bool(0.5)
                .then(|| format!("+32470{:06}", rng.random_range(0..1_000_000))),
            language: ["fr", "nl", "de", "en"]
                .choose(&mut rng)
                .expect("languages")
                .to_string(),
            centers: chosen,
            availability,
            confirm_hash: token_hash(&confirm),
            confirm_expires_at: now + crate::services::signup::CONFIRM_TOKEN_LIFETIME_MS,
            me_hash: token_hash(&random_token()),
            me_expires_at: now + standby_store::ME_TOKEN_LIFETIME_MS,
            message: None,
            confirmed_at,
        });
        if batch.len() == 500 {
            store
                .insert_registrations(std::mem::take(&mut batch), now)
                .await?;
        }
    }
    store.insert_registrations(batch, now).await?;
    Ok(Summary {
        already_present: false,
        logins,
        registrants,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    #[test]
    fn generated_ids_are_valid() {
        let today = date(2026, 11, 24);
        for (y, m, d) in [(1931, 1, 5), (1999, 12, 31), (2004, 2, 29), (2008, 7, 1)] {
            assert!(NationalId::parse(Country::Be, &belgian_id(y, m, d, 17), today).is_ok());
            assert!(NationalId::parse(Country::Lu, &luxembourg_id(y, m, d, 17), today).is_ok());
        }
    }
}
