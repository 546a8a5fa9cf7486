//! The harness itself works: a server starts, takes data and stops.

use crate::harness::*;

#[test]
fn harness_starts_a_private_redis() {
    let server = RedisServer::start();
    let mut c = server.conn();
    let n = Names::new();
    push_all(&mut c, &n.source, &[event(1, 100), event(2, 100)]);
    let all = read_all(&mut c, &n.source);
    assert_eq!(
        all.iter().map(|m| seq_of(m)).collect::<Vec<_>>(),
        vec![1, 2]
    );
}
