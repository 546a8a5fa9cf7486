//! The demo scraper: LPUSHes product events of about 500 bytes onto the source list at a
//! steady rate, with a malformed one now and then so the dead-letter list has something to
//! show.

use std::fmt::Write as _;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{DemoError, Reconnecting};
use crate::redis::connection::Connector;
use crate::settings::Settings;

/// Seconds between two progress lines.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// What to produce.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProduceOptions {
    /// Events per second (above 0).
    pub rate: f64,
    /// Stop after this many events; `None` runs until shutdown.
    pub count: Option<u64>,
    /// Every this many events one is malformed; 0 for never.
    pub bad_every: u64,
}

/// What was produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Produced {
    /// Events pushed.
    pub pushed: u64,
    /// Of those, malformed on purpose.
    pub malformed: u64,
}

/// Push events until `opts.count` is reached or `shutdown` fires.
pub async fn run(
    settings: &Settings,
    opts: ProduceOptions,
    shutdown: CancellationToken,
) -> Result<Produced, DemoError> {
    let queue = settings.queues.first_source();
    let mut conn = Reconnecting::new(Connector::new(&settings.redis)?, None);
    tracing::info!(
        message = "demo producer started",
        redis = %settings.redis.display_addr(),
        source = %queue,
        rate = opts.rate,
        count = opts.count,
        bad_every = opts.bad_every,
    );
    let interval = Duration::from_secs_f64(1.0 / opts.rate);
    let mut started = Instant::now();
    let mut done = Produced::default();
    let mut last_report = Instant::now();
    let mut event = String::with_capacity(1024);
    while opts.count.is_none_or(|c| done.pushed < c) {
        // Event n is due at `started + n * interval`, so the rate stays steady.
        let due = started + interval.mul_f64(done.pushed as f64);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep_until(due) => {}
        }
        let Some(c) = conn.get(&shutdown).await else {
            // After an outage, resume at the rate from now rather than in a burst.
            started = Instant::now() - interval.mul_f64(done.pushed as f64);
            continue;
        };
        let malformed = opts.bad_every > 0 && done.pushed % opts.bad_every == opts.bad_every - 1;
        event.clear();
        write_event(&mut event, done.pushed, malformed);
        let pushed: redis::RedisResult<i64> = redis::cmd("LPUSH")
            .arg(queue)
            .arg(event.as_bytes())
            .query_async(c)
            .await;
        if let Err(source) = pushed {
            conn.failed("LPUSH", source, &shutdown).await;
            started = Instant::now() - interval.mul_f64(done.pushed as f64);
            continue;
        }
        done.pushed += 1;
        done.malformed += u64::from(malformed);
        if last_report.elapsed() >= PROGRESS_EVERY {
            tracing::info!(
                message = "demo events pushed",
                pushed = done.pushed,
                malformed = done.malformed
            );
            last_report = Instant::now();
        }
    }
    tracing::info!(
        message = "demo producer stopped",
        pushed = done.pushed,
        malformed = done.malformed
    );
    Ok(done)
}

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

/// Event `seq`, about 500 bytes of JSON; `malformed` cuts it short so it is not JSON.
pub fn write_event(out: &mut String, seq: u64, malformed: bool) {
    let products = PRODUCTS.len() as u64;
    // Both indexes are below the tables' lengths, so they fit a usize.
    let (title, category, base) = PRODUCTS[usize::try_from(seq % products).unwrap_or(0)];
    let shop = SHOPS[usize::try_from((seq / products) % SHOPS.len() as u64).unwrap_or(0)];
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
        title = serde_json::Value::String(title.to_owned()),
        in_stock = !seq.is_multiple_of(7),
        rating = 3.5 + f64::from(fastrand::u8(..15)) / 10.0,
        reviews = fastrand::u16(..2000),
        worker = seq % 4,
    );
    if malformed {
        // A producer bug: the event is cut off in the middle (at a character boundary).
        let mut cut = out.len() / 2;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_good_json_of_about_500_bytes_unless_malformed() {
        let mut out = String::new();
        for seq in 0..64 {
            out.clear();
            write_event(&mut out, seq, false);
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            assert_eq!(v["seq"], seq);
            assert!((400..700).contains(&out.len()), "{}", out.len());
            out.clear();
            write_event(&mut out, seq, true);
            assert!(serde_json::from_str::<serde_json::Value>(&out).is_err());
        }
    }
}
