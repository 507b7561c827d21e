//! Tests of the sink planner: every rule, and property tests against a
//! model of DynamoDB's `UpdateItem`.

use super::*;

use proptest::prelude::*;
use tributary_engine::ids::TableName;

type Doc = BTreeMap<String, AttrValue>;

fn a(s: &str) -> AttrName {
    AttrName::new(s).expect("valid attribute name")
}

fn n(v: i128) -> AttrValue {
    AttrValue::N(Number::from_i128(v))
}

fn s(v: &str) -> AttrValue {
    AttrValue::S(v.to_owned())
}

fn ss(v: &[&str]) -> AttrValue {
    AttrValue::Ss(v.iter().map(|e| (*e).to_owned()).collect())
}

fn ns(v: &[i128]) -> AttrValue {
    AttrValue::Ns(v.iter().map(|e| Number::from_i128(*e)).collect())
}

/// `pk`/`sk` keys; `c` counter, `t` set, `m` multi, anything else lww.
fn schema() -> TableSchema {
    TableSchema::new(
        TableName::new("carts").expect("valid table"),
        a("pk"),
        Some(a("sk")),
    )
    .and_then(|s| s.with_policy(a("c"), MergePolicy::Counter))
    .and_then(|s| s.with_policy(a("t"), MergePolicy::Set))
    .and_then(|s| s.with_policy(a("m"), MergePolicy::Multi))
    .expect("valid schema")
}

fn merged(attrs: &[(&str, AttrValue)]) -> BTreeMap<AttrName, AttrValue> {
    attrs.iter().map(|(k, v)| (a(k), v.clone())).collect()
}

fn image(attrs: &[(&str, AttrValue)]) -> Doc {
    attrs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect()
}

/// Plans `merged` over `image`, both present.
fn plan_of(
    m: &[(&str, AttrValue)],
    i: &[(&str, AttrValue)],
) -> Result<Option<SinkWrite>, PlanError> {
    plan(&schema(), Some(&merged(m)), Some(&image(i)))
}

/// The update planned for `merged` over `image`, both present.
fn update_of(m: &[(&str, AttrValue)], i: &[(&str, AttrValue)]) -> Update {
    match plan_of(m, i) {
        Ok(Some(SinkWrite::Update(u))) => u,
        other => panic!("expected an update, got {other:?}"),
    }
}

#[test]
fn absent_items_plan_nothing_a_delete_or_a_creating_update() {
    let sc = schema();
    assert_eq!(plan(&sc, None, None), Ok(None));
    let img = image(&[("x", s("1"))]);
    assert_eq!(plan(&sc, None, Some(&img)), Ok(Some(SinkWrite::Delete)));
    assert_eq!(
        plan(&sc, None, Some(&Doc::new())),
        Ok(Some(SinkWrite::Delete))
    );
    // Creating an item with nothing but keys: an empty update still goes.
    let only_keys = merged(&[("pk", s("u1"))]);
    assert_eq!(
        plan(&sc, Some(&only_keys), None),
        Ok(Some(SinkWrite::Update(Update::default())))
    );
    let m = merged(&[("x", s("1")), ("c", n(3)), ("t", ss(&["a"]))]);
    assert_eq!(
        plan(&sc, Some(&m), None),
        Ok(Some(SinkWrite::Update(Update {
            set: vec![(a("x"), s("1"))],
            add: vec![(a("c"), n(3)), (a("t"), ss(&["a"]))],
            expect: vec![(a("x"), None)],
            ..Update::default()
        })))
    );
}

#[test]
fn nothing_differs_plans_nothing_and_keys_are_ignored() {
    let attrs = [("x", s("1")), ("c", n(3)), ("t", ss(&["a"])), ("m", n(1))];
    assert_eq!(plan_of(&attrs, &attrs), Ok(None));
    // Key attributes on either side, even differing, are never written.
    let mut with_keys = attrs.to_vec();
    with_keys.push(("pk", s("u1")));
    with_keys.push(("sk", n(7)));
    assert_eq!(plan_of(&with_keys, &attrs), Ok(None));
    let mut image_with_key = attrs.to_vec();
    image_with_key.push(("pk", s("u2")));
    assert_eq!(plan_of(&attrs, &image_with_key), Ok(None));
    assert_eq!(plan_of(&[], &[]), Ok(None));
}

#[test]
fn attributes_are_planned_in_name_order() {
    let u = update_of(
        &[("b", s("2")), ("a", s("1")), ("z", s("3"))],
        &[("y", s("0")), ("d", s("0"))],
    );
    let set: Vec<&str> = u.set.iter().map(|(k, _)| k.as_str()).collect();
    let remove: Vec<&str> = u.remove.iter().map(AttrName::as_str).collect();
    let expect: Vec<&str> = u.expect.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(set, ["a", "b", "z"]);
    assert_eq!(remove, ["d", "y"]);
    assert_eq!(expect, ["a", "b", "d", "y", "z"]);
}

#[test]
fn counters_add_the_difference() {
    let u = update_of(&[("c", n(10))], &[("c", n(3))]);
    assert_eq!(
        u,
        Update {
            add: vec![(a("c"), n(7))],
            ..Update::default()
        }
    );
    let u = update_of(&[("c", n(-2))], &[("c", n(3))]);
    assert_eq!(
        u,
        Update {
            add: vec![(a("c"), n(-5))],
            ..Update::default()
        }
    );
    // An absent image value counts as 0, and a merged 0 is still written.
    let u = update_of(&[("c", n(4))], &[]);
    assert_eq!(
        u,
        Update {
            add: vec![(a("c"), n(4))],
            ..Update::default()
        }
    );
    let u = update_of(&[("c", n(0))], &[]);
    assert_eq!(
        u,
        Update {
            add: vec![(a("c"), n(0))],
            ..Update::default()
        }
    );
    assert_eq!(plan_of(&[("c", n(5))], &[("c", n(5))]), Ok(None));
}

#[test]
fn a_removed_counter_is_removed_on_condition() {
    let u = update_of(&[], &[("c", n(3))]);
    assert_eq!(
        u,
        Update {
            remove: vec![a("c")],
            expect: vec![(a("c"), Some(n(3)))],
            ..Update::default()
        }
    );
}

#[test]
fn a_counter_the_table_holds_at_zero_is_left_alone() {
    // An application created the counter at 0: the merged document has no
    // counter until its first non-zero change; the 0 is the same count.
    assert_eq!(
        plan_of(&[("x", n(1))], &[("x", n(1)), ("c", n(0))]),
        Ok(None)
    );
}

#[test]
fn counters_that_are_not_integers_are_refused() {
    let half = AttrValue::N("0.5".parse().expect("number"));
    assert_eq!(
        plan_of(&[("c", half.clone())], &[]),
        Err(PlanError::CounterNotInteger {
            attr: "c".into(),
            found: "0.5".into(),
            side: MERGED,
        })
    );
    let err = plan_of(&[("c", n(1))], &[("c", s("x"))]).expect_err("a string counter");
    assert_eq!(
        err,
        PlanError::CounterNotInteger {
            attr: "c".into(),
            found: "S".into(),
            side: IMAGE,
        }
    );
    assert_eq!(
        err.to_string(),
        "counter attribute c must be an integer N, found S in the table image"
    );
    // Refused even when the merged value would only remove it.
    assert!(plan_of(&[], &[("c", half)]).is_err());
}

#[test]
fn a_counter_delta_beyond_38_digits_is_refused() {
    let big = 10i128.pow(37) * 9;
    let err = plan_of(&[("c", n(big))], &[("c", n(-big))]).expect_err("delta too wide");
    assert!(
        matches!(err, PlanError::CounterDeltaOutOfRange { ref attr, .. } if attr == "c"),
        "{err:?}"
    );
}

#[test]
fn sets_add_only_added_elements_and_delete_only_removed_ones() {
    let u = update_of(&[("t", ss(&["a", "b", "c"]))], &[("t", ss(&["a"]))]);
    assert_eq!(
        u,
        Update {
            add: vec![(a("t"), ss(&["b", "c"]))],
            ..Update::default()
        }
    );
    let u = update_of(&[("t", ns(&[1]))], &[("t", ns(&[1, 2, 3]))]);
    assert_eq!(
        u,
        Update {
            delete: vec![(a("t"), ns(&[2, 3]))],
            ..Update::default()
        }
    );
    let u = update_of(&[("t", ss(&["a"]))], &[]);
    assert_eq!(
        u,
        Update {
            add: vec![(a("t"), ss(&["a"]))],
            ..Update::default()
        }
    );
}

#[test]
fn a_set_gaining_and_losing_elements_is_set_on_condition() {
    let u = update_of(&[("t", ss(&["a", "c"]))], &[("t", ss(&["a", "b"]))]);
    assert_eq!(
        u,
        Update {
            set: vec![(a("t"), ss(&["a", "c"]))],
            expect: vec![(a("t"), Some(ss(&["a", "b"])))],
            ..Update::default()
        }
    );
}

#[test]
fn a_removed_or_emptied_set_deletes_the_image_elements() {
    let want = Update {
        delete: vec![(a("t"), ss(&["a", "b"]))],
        ..Update::default()
    };
    assert_eq!(update_of(&[], &[("t", ss(&["a", "b"]))]), want);
    assert_eq!(
        update_of(&[("t", ss(&[]))], &[("t", ss(&["a", "b"]))]),
        want
    );
    // An empty merged set over no image value: nothing to do.
    assert_eq!(plan_of(&[("t", ss(&[]))], &[]), Ok(None));
}

#[test]
fn a_set_changing_type_is_replaced_on_condition() {
    let u = update_of(&[("t", ns(&[1]))], &[("t", ss(&["1"]))]);
    assert_eq!(
        u,
        Update {
            set: vec![(a("t"), ns(&[1]))],
            expect: vec![(a("t"), Some(ss(&["1"])))],
            ..Update::default()
        }
    );
    // The list the engine shows for a set of mixed types.
    let mixed = AttrValue::L(vec![n(1), s("x")]);
    let u = update_of(&[("t", mixed.clone())], &[("t", ss(&["x"]))]);
    assert_eq!(
        u,
        Update {
            set: vec![(a("t"), mixed.clone())],
            expect: vec![(a("t"), Some(ss(&["x"])))],
            ..Update::default()
        }
    );
    let u = update_of(&[("t", mixed.clone())], &[]);
    assert_eq!(
        u,
        Update {
            set: vec![(a("t"), mixed.clone())],
            expect: vec![(a("t"), None)],
            ..Update::default()
        }
    );
    // A non-set value in the table under a set attribute that should go.
    let u = update_of(&[], &[("t", s("x"))]);
    assert_eq!(
        u,
        Update {
            remove: vec![a("t")],
            expect: vec![(a("t"), Some(s("x")))],
            ..Update::default()
        }
    );
}

#[test]
fn registers_are_set_or_removed_on_condition() {
    for attr in ["x", "m"] {
        let u = update_of(&[(attr, s("new"))], &[(attr, s("old"))]);
        assert_eq!(
            u,
            Update {
                set: vec![(a(attr), s("new"))],
                expect: vec![(a(attr), Some(s("old")))],
                ..Update::default()
            }
        );
        let u = update_of(&[(attr, n(1))], &[]);
        assert_eq!(
            u,
            Update {
                set: vec![(a(attr), n(1))],
                expect: vec![(a(attr), None)],
                ..Update::default()
            }
        );
        let u = update_of(&[], &[(attr, s("old"))]);
        assert_eq!(
            u,
            Update {
                remove: vec![a(attr)],
                expect: vec![(a(attr), Some(s("old")))],
                ..Update::default()
            }
        );
    }
}

#[test]
fn an_empty_set_is_never_set_but_removed() {
    let u = update_of(&[("x", ss(&[]))], &[("x", ss(&["a"]))]);
    assert_eq!(
        u,
        Update {
            remove: vec![a("x")],
            expect: vec![(a("x"), Some(ss(&["a"])))],
            ..Update::default()
        }
    );
    assert_eq!(plan_of(&[("x", ns(&[]))], &[]), Ok(None));
}

#[test]
fn an_image_attribute_name_the_engine_refuses_is_an_error() {
    let err = plan_of(&[], &[("bad\u{1}", s("x"))]).expect_err("control character");
    assert!(
        matches!(err, PlanError::AttrName { ref name, .. } if name == "bad\u{1}"),
        "{err:?}"
    );
}

// ---- A model of DynamoDB's UpdateItem / DeleteItem, for the properties.

/// Why the model refused a write.
#[derive(Debug, PartialEq)]
enum Refused {
    /// A condition on this attribute did not hold.
    Condition(String),
    /// DynamoDB would refuse the request itself.
    Invalid(String),
}

/// Applies `write` to `table` as DynamoDB would: every condition is
/// checked against the item before any action.
fn apply(table: Option<&Doc>, write: &SinkWrite) -> Result<Option<Doc>, Refused> {
    let u = match write {
        SinkWrite::Delete => return Ok(None),
        SinkWrite::Update(u) => u,
    };
    let invalid = |why: String| Err(Refused::Invalid(why));
    let mut paths = BTreeSet::new();
    let touched = u
        .set
        .iter()
        .map(|(k, _)| k)
        .chain(&u.remove)
        .chain(u.add.iter().map(|(k, _)| k))
        .chain(u.delete.iter().map(|(k, _)| k));
    for k in touched {
        if !paths.insert(k.as_str()) {
            return invalid(format!("two actions on {k}"));
        }
    }
    let empty = Doc::new();
    let before = table.unwrap_or(&empty);
    for (k, v) in &u.expect {
        if before.get(k.as_str()) != v.as_ref() {
            return Err(Refused::Condition(k.to_string()));
        }
    }
    let mut after = before.clone();
    for (k, v) in &u.set {
        if is_empty_set(v) {
            return invalid(format!("SET {k} to an empty set"));
        }
        after.insert(k.to_string(), v.clone());
    }
    for k in &u.remove {
        after.remove(k.as_str());
    }
    for (k, v) in &u.add {
        let sum = match (after.get(k.as_str()), v) {
            (_, v) if is_empty_set(v) => return invalid(format!("ADD an empty set to {k}")),
            (None, v) if matches!(v, AttrValue::N(_)) || is_set(v) => v.clone(),
            (Some(AttrValue::N(x)), AttrValue::N(d)) => {
                let x = x.to_i128().expect("integer in the model");
                n(x + d.to_i128().expect("integer delta"))
            }
            (Some(AttrValue::Ss(x)), AttrValue::Ss(e)) => AttrValue::Ss(x | e),
            (Some(AttrValue::Ns(x)), AttrValue::Ns(e)) => AttrValue::Ns(x | e),
            (Some(AttrValue::Bs(x)), AttrValue::Bs(e)) => AttrValue::Bs(x | e),
            (x, v) => return invalid(format!("ADD {v:?} to {x:?} at {k}")),
        };
        after.insert(k.to_string(), sum);
    }
    for (k, v) in &u.delete {
        let rest = match (after.get(k.as_str()), v) {
            (_, v) if is_empty_set(v) => {
                return invalid(format!("DELETE an empty set from {k}"));
            }
            (None, v) if is_set(v) => continue,
            (Some(AttrValue::Ss(x)), AttrValue::Ss(e)) => AttrValue::Ss(x - e),
            (Some(AttrValue::Ns(x)), AttrValue::Ns(e)) => AttrValue::Ns(x - e),
            (Some(AttrValue::Bs(x)), AttrValue::Bs(e)) => AttrValue::Bs(x - e),
            (x, v) => return invalid(format!("DELETE {v:?} from {x:?} at {k}")),
        };
        if is_empty_set(&rest) {
            after.remove(k.as_str());
        } else {
            after.insert(k.to_string(), rest);
        }
    }
    Ok(Some(after))
}

#[test]
fn the_model_refuses_what_dynamodb_refuses() {
    let overlap = SinkWrite::Update(Update {
        set: vec![(a("x"), s("1"))],
        remove: vec![a("x")],
        ..Update::default()
    });
    assert!(matches!(apply(None, &overlap), Err(Refused::Invalid(_))));
    let empty = SinkWrite::Update(Update {
        set: vec![(a("x"), ss(&[]))],
        ..Update::default()
    });
    assert!(matches!(apply(None, &empty), Err(Refused::Invalid(_))));
    let cond = SinkWrite::Update(Update {
        expect: vec![(a("x"), Some(s("1")))],
        ..Update::default()
    });
    assert_eq!(apply(None, &cond), Err(Refused::Condition("x".into())));
    let add = SinkWrite::Update(Update {
        add: vec![(a("x"), ss(&["a"]))],
        ..Update::default()
    });
    assert!(matches!(
        apply(Some(&image(&[("x", n(1))])), &add),
        Err(Refused::Invalid(_))
    ));
}

// ---- Generated schemas, images and merged documents.

const ATTRS: [&str; 6] = ["a0", "a1", "a2", "a3", "a4", "a5"];

fn policy() -> impl Strategy<Value = MergePolicy> {
    prop_oneof![
        Just(MergePolicy::Lww),
        Just(MergePolicy::Counter),
        Just(MergePolicy::Set),
        Just(MergePolicy::Multi),
    ]
}

fn small_set<T: Ord + std::fmt::Debug + Clone + 'static>(
    pool: Vec<T>,
) -> impl Strategy<Value = BTreeSet<T>> {
    proptest::sample::subsequence(pool.clone(), 0..=pool.len())
        .prop_map(|v| v.into_iter().collect())
}

fn set_value() -> impl Strategy<Value = AttrValue> {
    prop_oneof![
        4 => small_set(vec!["x".to_owned(), "y".to_owned(), "z".to_owned()]).prop_map(AttrValue::Ss),
        2 => small_set(vec![Number::from_i128(1), Number::from_i128(2), Number::from_i128(3)]).prop_map(AttrValue::Ns),
        1 => small_set(vec![vec![0u8], vec![1u8]]).prop_map(AttrValue::Bs),
        1 => Just(AttrValue::L(vec![n(1), s("x")])),
        1 => Just(s("x")),
    ]
}

fn register_value() -> impl Strategy<Value = AttrValue> {
    let scalar = prop_oneof![
        prop::sample::select(vec!["p", "q"]).prop_map(s),
        (-2i128..3).prop_map(n),
        any::<bool>().prop_map(AttrValue::Bool),
        Just(AttrValue::Null),
    ];
    prop_oneof![
        4 => scalar.clone(),
        1 => prop::collection::vec(scalar.clone(), 0..3).prop_map(AttrValue::L),
        1 => prop::collection::vec((prop::sample::select(vec!["k", "l"]), scalar), 0..3)
            .prop_map(|kv| AttrValue::M(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        1 => small_set(vec!["p".to_owned(), "q".to_owned()]).prop_map(AttrValue::Ss),
    ]
}

fn value(policy: MergePolicy) -> BoxedStrategy<AttrValue> {
    match policy {
        MergePolicy::Counter => (-3i128..4).prop_map(n).boxed(),
        MergePolicy::Set => set_value().boxed(),
        MergePolicy::Lww | MergePolicy::Multi => register_value().boxed(),
    }
}

/// One attribute's image value and merged value; half the time the
/// merged value is the image's (so "nothing differs" is common).
fn attr_pair(policy: MergePolicy) -> impl Strategy<Value = (Option<AttrValue>, Option<AttrValue>)> {
    (
        prop::option::weighted(0.7, value(policy)),
        prop::option::weighted(0.7, value(policy)),
        any::<bool>(),
    )
        .prop_map(|(i, m, same)| {
            // DynamoDB never holds an empty set.
            let i = i.filter(|v| !is_empty_set(v));
            (i.clone(), if same { i } else { m })
        })
}

#[derive(Debug, Clone)]
struct Case {
    schema: TableSchema,
    image: Option<Doc>,
    merged: Option<BTreeMap<AttrName, AttrValue>>,
}

/// A case whose first attribute is a counter when `counter_first`.
fn case(counter_first: bool) -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(policy(), ATTRS.len()),
        any::<(bool, bool)>(),
    )
        .prop_flat_map(move |(mut policies, exists)| {
            if counter_first {
                policies[0] = MergePolicy::Counter;
            }
            let pairs: Vec<_> = policies.iter().map(|p| attr_pair(*p)).collect();
            let keys = (
                prop::option::of(Just(s("u1"))),
                prop::option::of(Just(s("u2"))),
            );
            (Just(policies), pairs, keys, Just(exists))
        })
        .prop_map(
            |(policies, pairs, (image_key, merged_key), (image_exists, merged_exists))| {
                let mut schema =
                    TableSchema::new(TableName::new("t").expect("table"), a("pk"), Some(a("sk")))
                        .expect("schema");
                for (name, p) in ATTRS.iter().zip(&policies) {
                    schema = schema.with_policy(a(name), *p).expect("policy");
                }
                let mut image = Doc::new();
                let mut merged = BTreeMap::new();
                for (name, (i, m)) in ATTRS.iter().zip(pairs) {
                    if let Some(i) = i {
                        image.insert((*name).to_owned(), i);
                    }
                    if let Some(m) = m {
                        merged.insert(a(name), m);
                    }
                }
                // Key attributes, which the plan must ignore.
                if let Some(k) = image_key {
                    image.insert("pk".to_owned(), k);
                }
                if let Some(k) = merged_key {
                    merged.insert(a("sk"), k);
                }
                Case {
                    schema,
                    image: image_exists.then_some(image),
                    merged: merged_exists.then_some(merged),
                }
            },
        )
}

/// What the table must hold: the merged document without key attributes
/// and empty sets.
fn expected(case: &Case) -> Option<Doc> {
    case.merged.as_ref().map(|m| {
        m.iter()
            .filter(|(k, v)| !case.schema.is_key(k) && !is_empty_set(v))
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    })
}

/// `doc` without counters at 0: a counter is absent from the merged
/// document until its first non-zero change, and the plan leaves a 0 the
/// table holds alone (the same count).
fn zero_counters_dropped(schema: &TableSchema, doc: Option<Doc>) -> Option<Doc> {
    doc.map(|d| {
        d.into_iter()
            .filter(|(k, v)| {
                !(schema.policy(&a(k)) == MergePolicy::Counter
                    && matches!(v, AttrValue::N(x) if x.to_i128() == Some(0)))
            })
            .collect()
    })
}

/// The table as of the image (which holds no key attributes).
fn table(case: &Case) -> Option<Doc> {
    case.image.as_ref().map(|i| {
        i.iter()
            .filter(|(k, _)| !case.schema.is_key(&a(k)))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn applying_the_plan_to_the_image_yields_the_merged_document(case in case(false)) {
        let write = plan(&case.schema, case.merged.as_ref(), case.image.as_ref())
            .expect("valid case plans");
        let table = table(&case);
        let result = match &write {
            Some(w) => apply(table.as_ref(), w).expect("conditions hold on the image"),
            None => table,
        };
        prop_assert_eq!(
            zero_counters_dropped(&case.schema, result),
            zero_counters_dropped(&case.schema, expected(&case)),
            "plan {:?}",
            write
        );
        if let (Some(SinkWrite::Update(u)), Some(_)) = (&write, &case.image) {
            prop_assert!(!u.is_empty(), "an existing item gets an empty update");
        }
    }

    #[test]
    fn a_concurrent_increment_survives_the_plan(case in case(true), k in 1i128..5) {
        let write = plan(&case.schema, case.merged.as_ref(), case.image.as_ref())
            .expect("valid case plans");
        let Some(merged) = expected(&case) else {
            // Deleting the item: the increment goes with it.
            return Ok(());
        };
        let c = ATTRS[0];
        let bump = |doc: &mut Doc, by: i128| {
            let was = doc.get(c).and_then(|v| match v {
                AttrValue::N(x) => x.to_i128(),
                _ => None,
            });
            doc.insert(c.to_owned(), n(was.unwrap_or(0) + by));
        };
        // An application increments the counter after the image was taken.
        let mut table = table(&case).unwrap_or_default();
        bump(&mut table, k);
        let result = match &write {
            Some(w) => apply(Some(&table), w),
            None => Ok(Some(table)),
        };
        match result {
            Ok(result) => {
                let mut want = merged;
                bump(&mut want, k);
                prop_assert_eq!(
                    zero_counters_dropped(&case.schema, result),
                    zero_counters_dropped(&case.schema, Some(want)),
                    "plan {:?}",
                    write
                );
            }
            Err(Refused::Condition(attr)) => {
                // Only a REMOVE of the counter is conditioned on it.
                prop_assert_eq!(&attr, c);
                let Some(SinkWrite::Update(u)) = &write else {
                    return Err(TestCaseError::fail("a refused write that is no update"));
                };
                prop_assert!(u.remove.contains(&a(c)), "plan {:?}", write);
            }
            Err(other) => return Err(TestCaseError::fail(format!("{other:?} for {write:?}"))),
        }
    }
}
