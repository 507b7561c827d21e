//! The README's first command must keep working and keep meaning what it
//! says: the three regions converge and keep what whole-item LWW loses.

#[test]
fn the_demo_converges_and_shows_what_lww_loses() {
    let mut out = Vec::new();
    tributary_replicator::demo::run(&mut out, false).expect("demo runs");
    let text = String::from_utf8(out).expect("utf-8 output");
    assert_eq!(
        text.matches("all three regions identical: yes").count(),
        2,
        "{text}"
    );
    let qty = text
        .lines()
        .skip_while(|l| !l.contains("cart line \"espresso\""))
        .find(|l| l.trim_start().starts_with("qty"))
        .expect("espresso qty line");
    let merged: Vec<&str> = qty.split_whitespace().collect();
    assert_eq!(merged.get(1), Some(&"7"), "every increment counts: {qty}");
    assert_eq!(
        merged.get(2),
        Some(&"2"),
        "whole-item LWW keeps one region's count: {qty}"
    );
    assert!(text.contains("replctl lag, per region:"), "{text}");
    assert!(
        text.contains("[\"express\"]"),
        "the concurrent tag add survives: {text}"
    );
}
