use super::*;

#[test]
fn sentinel_lists() {
    assert_eq!(
        sentinel_nodes("a:1, b:26379,[::1]:3"),
        Some(vec![
            ("a".to_owned(), 1),
            ("b".to_owned(), 26379),
            ("::1".to_owned(), 3)
        ])
    );
    for bad in ["a", "a:0", "a:x", ":1", "a:1,", "a:70000"] {
        assert_eq!(sentinel_nodes(bad), None, "{bad}");
    }
}
