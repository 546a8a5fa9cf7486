//! A demo producer: LPUSHes realistic scraper events (about 500 bytes of JSON each) onto the
//! daemon's source list at a steady rate, with a malformed one now and then so the
//! dead-letter list has something to show.
//!
//! It reads the same `REDIS_*` variables as the daemon (`REDIS_URL` or `REDIS_HOST`,
//! `REDIS_PORT`, `REDIS_DB`, `REDIS_USERNAME`, `REDIS_PASSWORD`, `REDIS_RAW_DATA_QUEUE`), plus:
//!
//! - `DEMO_RATE`: events per second (default 5, fractions allowed);
//! - `DEMO_BAD_EVERY`: every this many events one is malformed (default 50, 0 for never);
//! - `DEMO_COUNT`: stop after this many events (default: run until interrupted).
//!
//! ```text
//! cargo run --release --example demo_producer
//! ```

// Small counters index small tables; the cast lints guard the library.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]

use std::error::Error;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use batch_processor::settings::{self, ProcessEnv};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// Products the fake scraper "finds": (title, category, base price in EUR).
const PRODUCTS: &[(&str, &str, f64)] = &[
    ("Kaffeevollautomat Crème 3000 – Edelstahl", "küche", 449.0),
    ("Wasserkocher 1,7 l Glas mit LED", "küche", 34.99),
    ("Trekkingrucksack 45 l wasserabweisend", "outdoor", 89.5),
    (
        "Smartphone-Hülle für Modell X (transparent)",
        "elektronik",
        12.99,
    ),
    ("Chaise de bureau ergonomique « Confort »", "büro", 199.0),
    (
        "Auriculares inalámbricos con cancelación de ruido",
        "elektronik",
        129.0,
    ),
    (
        "Écouteurs Bluetooth 5.3 — autonomie 30 h",
        "elektronik",
        59.9,
    ),
    ("Gusseisen-Bräter 28 cm, emailliert", "küche", 79.0),
];

const SHOPS: &[&str] = &[
    "www.example-shop.de",
    "boutique.example.fr",
    "tienda.example.es",
    "store.example.com",
];

fn main() -> Result<()> {
    let settings = settings::load(&ProcessEnv, None)?;
    let rate = env_f64("DEMO_RATE", 5.0)?;
    if !(rate > 0.0 && rate <= 1_000_000.0) {
        return Err(
            format!("DEMO_RATE={rate}: expected a number above 0 and up to 1000000").into(),
        );
    }
    let bad_every = env_u64("DEMO_BAD_EVERY", 50)?;
    let count = std::env::var("DEMO_COUNT")
        .ok()
        .map(|v| v.parse::<u64>())
        .transpose()
        .map_err(|e| format!("DEMO_COUNT: {e}"))?;
    let queue = settings.queues.first_source().to_owned();
    let client = redis::Client::open(settings.redis.connection.clone())?;
    eprintln!(
        "demo_producer: pushing {rate} events/s onto {queue} at {} (one malformed every {bad_every})",
        settings.redis.display_addr()
    );

    let mut conn: Option<redis::Connection> = None;
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut seq: u64 = 0;
    let mut bad: u64 = 0;
    let mut last_report = Instant::now();
    let mut buf = String::with_capacity(1024);
    while count.is_none_or(|c| seq < c) {
        // Keep the rate steady: event `seq` is due at `started + seq * interval`.
        let due = started + interval.mul_f64(seq as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let malformed = bad_every > 0 && seq % bad_every == bad_every - 1;
        buf.clear();
        write_event(&mut buf, seq, malformed);
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match client.get_connection_with_timeout(Duration::from_secs(2)) {
                Ok(c) => conn.insert(c),
                Err(e) => {
                    eprintln!("demo_producer: cannot reach Redis ({e}); retrying in 1 s");
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let pushed: redis::RedisResult<i64> =
            redis::cmd("LPUSH").arg(&queue).arg(buf.as_bytes()).query(c);
        if let Err(e) = pushed {
            eprintln!("demo_producer: LPUSH failed ({e}); reconnecting");
            conn = None;
            std::thread::sleep(Duration::from_secs(1));
            continue;
        }
        seq += 1;
        bad += u64::from(malformed);
        if last_report.elapsed() >= Duration::from_secs(10) {
            eprintln!("demo_producer: {seq} events pushed ({bad} malformed)");
            last_report = Instant::now();
        }
    }
    eprintln!("demo_producer: done, {seq} events pushed ({bad} malformed)");
    Ok(())
}

/// One scraper event of about 500 bytes; `malformed` cuts it short so it is not JSON.
fn write_event(out: &mut String, seq: u64, malformed: bool) {
    let (title, category, base) = PRODUCTS[(seq as usize) % PRODUCTS.len()];
    let shop = SHOPS[(seq as usize / PRODUCTS.len()) % SHOPS.len()];
    let price = base * (0.9 + f64::from(fastrand::u8(..20)) / 100.0);
    let scraped_at = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6f+00:00");
    let slug: String = title
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == ' ')
        .map(|c| {
            if c == ' ' {
                '-'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    // `fmt::Write` for a String cannot fail.
    let _ = write!(
        out,
        r#"{{"event":"product_scraped","seq":{seq},"url":"https://{shop}/p/{slug}-{sku}","title":{title},"category":"{category}","price":{{"amount":{price:.2},"currency":"EUR"}},"in_stock":{in_stock},"rating":{rating:.1},"reviews":{reviews},"scraped_at":"{scraped_at}","scraper":{{"name":"shop-spider","version":"2.3.1","worker":"w-{worker}"}},"description":"Lieferung in 2\u20133 Werktagen. Kostenloser Versand ab 50 \u20ac. Caf\u00e9-Qualit\u00e4t f\u00fcr zu Hause."}}"#,
        sku = 100_000 + seq % 900_000,
        title = json_string(title),
        in_stock = !seq.is_multiple_of(7),
        rating = 3.5 + f64::from(fastrand::u8(..15)) / 10.0,
        reviews = fastrand::u16(..2000),
        worker = seq % 4,
    );
    if malformed {
        // A producer bug: the event is cut off in the middle.
        out.truncate(out.len() / 2);
    }
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

fn env_f64(name: &str, default: f64) -> Result<f64> {
    match std::env::var(name) {
        Ok(v) => Ok(v.trim().parse().map_err(|e| format!("{name}={v:?}: {e}"))?),
        Err(_) => Ok(default),
    }
}

fn env_u64(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) => Ok(v.trim().parse().map_err(|e| format!("{name}={v:?}: {e}"))?),
        Err(_) => Ok(default),
    }
}
