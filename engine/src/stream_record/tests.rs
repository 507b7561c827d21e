use serde_json::{Value, json};

use super::*;
use crate::ids::TableName;
use crate::value::Number;

fn a(s: &str) -> AttrName {
    AttrName::new(s).expect("valid attribute name")
}

fn num(s: &str) -> Number {
    s.parse().expect("valid number")
}

fn n(s: &str) -> AttrValue {
    AttrValue::N(num(s))
}

fn s(v: &str) -> AttrValue {
    AttrValue::S(v.to_owned())
}

fn ss(items: &[&str]) -> AttrValue {
    AttrValue::Ss(items.iter().map(|x| (*x).to_owned()).collect())
}

fn schema() -> TableSchema {
    TableSchema::new(
        TableName::new("carts").expect("valid table"),
        a("pk"),
        Some(a("sk")),
    )
    .and_then(|t| t.with_policy(a("qty"), MergePolicy::Counter))
    .and_then(|t| t.with_policy(a("tags"), MergePolicy::Set))
    .and_then(|t| t.with_policy(a("note"), MergePolicy::Multi))
    .expect("valid schema")
}

fn image(attrs: &[(&str, AttrValue)]) -> BTreeMap<String, AttrValue> {
    let mut m: BTreeMap<String, AttrValue> = attrs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.clone()))
        .collect();
    m.insert("pk".into(), s("u1"));
    m.insert("sk".into(), n("7"));
    m
}

fn record(
    event: EventName,
    old: Option<&[(&str, AttrValue)]>,
    new: Option<&[(&str, AttrValue)]>,
) -> ChangeRecord {
    ChangeRecord {
        event,
        table: Some("carts".into()),
        keys: BTreeMap::from([("pk".into(), s("u1")), ("sk".into(), n("7"))]),
        old_image: old.map(image),
        new_image: new.map(image),
        approximate_creation_millis: Some(1_700_000_000_123),
    }
}

fn derive(r: &ChangeRecord) -> Result<Vec<Op>, RecordError> {
    derive_change(&schema(), r, &[a("_tributary")]).map(|c| c.ops)
}

fn set_op(attr: &str, value: AttrValue) -> Op {
    Op::Set {
        attr: a(attr),
        value,
    }
}

fn strs(items: &[&str]) -> Vec<Scalar> {
    items.iter().map(|x| Scalar::S((*x).to_owned())).collect()
}

#[test]
fn ops_follow_each_policy() {
    use EventName::{Insert, Modify};
    let cases: Vec<(&str, ChangeRecord, Vec<Op>)> = vec![
        (
            "insert writes every attribute, in name order",
            record(
                Insert,
                None,
                Some(&[("tags", ss(&["b", "a"])), ("qty", n("3")), ("name", s("x"))]),
            ),
            vec![
                set_op("name", s("x")),
                Op::Add {
                    attr: a("qty"),
                    amount: 3,
                },
                Op::AddToSet {
                    attr: a("tags"),
                    elements: strs(&["a", "b"]),
                },
            ],
        ),
        (
            "counter 3 -> 5 adds 2",
            record(Modify, Some(&[("qty", n("3"))]), Some(&[("qty", n("5"))])),
            vec![Op::Add {
                attr: a("qty"),
                amount: 2,
            }],
        ),
        (
            "counter 5 -> -3 adds -8",
            record(Modify, Some(&[("qty", n("5"))]), Some(&[("qty", n("-3"))])),
            vec![Op::Add {
                attr: a("qty"),
                amount: -8,
            }],
        ),
        (
            "counter created at 0 adds nothing",
            record(Modify, Some(&[]), Some(&[("qty", n("0"))])),
            vec![],
        ),
        (
            "counter removed gives Remove",
            record(Modify, Some(&[("qty", n("3"))]), Some(&[])),
            vec![Op::Remove { attr: a("qty") }],
        ),
        (
            "counter with equal values in other notation is unchanged",
            record(
                Modify,
                Some(&[("qty", n("30"))]),
                Some(&[("qty", n("3.0E1"))]),
            ),
            vec![],
        ),
        (
            "set differences: removals then additions, sorted",
            record(
                Modify,
                Some(&[("tags", ss(&["a", "b", "d"]))]),
                Some(&[("tags", ss(&["b", "e", "c"]))]),
            ),
            vec![
                Op::RemoveFromSet {
                    attr: a("tags"),
                    elements: strs(&["a", "d"]),
                },
                Op::AddToSet {
                    attr: a("tags"),
                    elements: strs(&["c", "e"]),
                },
            ],
        ),
        (
            "set removed gives Remove",
            record(Modify, Some(&[("tags", ss(&["a"]))]), Some(&[])),
            vec![Op::Remove { attr: a("tags") }],
        ),
        (
            "mixed-type set written back as a list of scalars",
            record(
                Modify,
                Some(&[("tags", AttrValue::L(vec![s("a"), n("1")]))]),
                Some(&[("tags", ss(&["a"]))]),
            ),
            vec![Op::RemoveFromSet {
                attr: a("tags"),
                elements: vec![Scalar::N(num("1"))],
            }],
        ),
        (
            "lww changed, added and removed",
            record(
                Modify,
                Some(&[("name", s("x")), ("gone", AttrValue::Bool(true))]),
                Some(&[("name", s("y")), ("fresh", AttrValue::Null)]),
            ),
            vec![
                set_op("fresh", AttrValue::Null),
                Op::Remove { attr: a("gone") },
                set_op("name", s("y")),
            ],
        ),
        (
            "multi changed gives Set",
            record(Modify, Some(&[("note", s("a"))]), Some(&[("note", s("b"))])),
            vec![set_op("note", s("b"))],
        ),
        (
            "unchanged attributes produce nothing",
            record(
                Modify,
                Some(&[
                    ("name", s("x")),
                    ("qty", n("2")),
                    ("tags", ss(&["a"])),
                    ("note", s("n")),
                ]),
                Some(&[
                    ("name", s("x")),
                    ("qty", n("2")),
                    ("tags", ss(&["a"])),
                    ("note", s("n")),
                ]),
            ),
            vec![],
        ),
        (
            "ignored attributes produce nothing",
            record(
                Modify,
                Some(&[("_tributary", s("us-east-1:1"))]),
                Some(&[("_tributary", s("eu-west-1:9")), ("name", s("x"))]),
            ),
            vec![set_op("name", s("x"))],
        ),
        (
            "REMOVE deletes",
            record(EventName::Remove, Some(&[("qty", n("3"))]), None),
            vec![Op::Delete],
        ),
        (
            "REMOVE without images deletes",
            record(EventName::Remove, None, None),
            vec![Op::Delete],
        ),
    ];
    for (what, rec, want) in cases {
        assert_eq!(derive(&rec), Ok(want), "{what}");
    }
}

#[test]
fn change_carries_key_and_source_time() {
    let rec = record(EventName::Modify, Some(&[]), Some(&[("name", s("x"))]));
    let change = derive_change(&schema(), &rec, &[]).expect("derives");
    assert_eq!(change.key.partition(), &Scalar::S("u1".into()));
    assert_eq!(change.key.sort(), Some(&Scalar::N(num("7"))));
    assert_eq!(change.key.table().as_str(), "carts");
    assert_eq!(change.source_millis, Some(1_700_000_000_123));
}

#[test]
fn key_falls_back_to_the_images() {
    let mut rec = record(EventName::Remove, Some(&[]), None);
    rec.keys.clear();
    let change = derive_change(&schema(), &rec, &[]).expect("key from old image");
    assert_eq!(change.key.partition(), &Scalar::S("u1".into()));
    rec.old_image = None;
    assert_eq!(
        derive(&rec),
        Err(RecordError::MissingKeyAttribute { attr: a("pk") })
    );
}

#[test]
fn wrong_records_give_the_right_error() {
    use EventName::{Insert, Modify};
    let mut bool_key = record(Modify, Some(&[]), Some(&[]));
    bool_key.keys.insert("pk".into(), AttrValue::Bool(true));
    let mut empty_key = record(Modify, Some(&[]), Some(&[]));
    empty_key.keys.insert("pk".into(), s(""));
    let mut extra_key = record(Modify, Some(&[]), Some(&[]));
    extra_key.keys.insert("other".into(), s("x"));
    let mut other_table = record(Modify, Some(&[]), Some(&[]));
    other_table.table = Some("orders".into());

    let cases: Vec<(&str, ChangeRecord, RecordError)> = vec![
        (
            "counter holding a string",
            record(Modify, Some(&[("qty", n("1"))]), Some(&[("qty", s("x"))])),
            RecordError::CounterNotInteger {
                attr: a("qty"),
                found: "S".into(),
                image: "new image",
            },
        ),
        (
            "counter holding a fraction",
            record(Modify, Some(&[("qty", n("1.5"))]), Some(&[("qty", n("2"))])),
            RecordError::CounterNotInteger {
                attr: a("qty"),
                found: "1.5".into(),
                image: "old image",
            },
        ),
        (
            "counter too large for i128",
            record(Insert, None, Some(&[("qty", n("1E+40"))])),
            RecordError::CounterNotInteger {
                attr: a("qty"),
                found: "1E+40".into(),
                image: "new image",
            },
        ),
        (
            "set holding a string",
            record(Modify, Some(&[]), Some(&[("tags", s("a"))])),
            RecordError::SetWrongType {
                attr: a("tags"),
                found: "S",
                image: "new image",
            },
        ),
        (
            "set holding a list of maps",
            record(
                Modify,
                Some(&[("tags", AttrValue::L(vec![AttrValue::M(BTreeMap::new())]))]),
                Some(&[("tags", ss(&["a"]))]),
            ),
            RecordError::SetWrongType {
                attr: a("tags"),
                found: "L",
                image: "old image",
            },
        ),
        (
            "MODIFY without OldImage",
            record(Modify, None, Some(&[])),
            RecordError::MissingOldImage,
        ),
        (
            "INSERT without NewImage",
            record(Insert, None, None),
            RecordError::MissingNewImage { event: Insert },
        ),
        (
            "key of type BOOL",
            bool_key,
            RecordError::KeyNotScalar {
                attr: a("pk"),
                found: "BOOL",
            },
        ),
        (
            "empty key",
            empty_key,
            RecordError::Key(KeyError::Length {
                which: "partition",
                max: crate::key::MAX_PARTITION_KEY_BYTES,
                len: 0,
            }),
        ),
        (
            "key attribute unknown to the schema",
            extra_key,
            RecordError::UnexpectedKeyAttribute {
                attr: "other".into(),
            },
        ),
        (
            "record of another table",
            other_table,
            RecordError::WrongTable {
                expected: "carts".into(),
                found: "orders".into(),
            },
        ),
    ];
    for (what, rec, want) in cases {
        assert_eq!(derive(&rec), Err(want), "{what}");
    }
    let bad_name = record(Modify, Some(&[]), Some(&[("a\nb", s("x"))]));
    assert!(matches!(
        derive(&bad_name),
        Err(RecordError::BadAttrName { ref name, .. }) if name == "a\nb"
    ));
}

#[test]
fn missing_image_errors_tell_the_fix() {
    let msg = RecordError::MissingOldImage.to_string();
    assert!(msg.contains("NEW_AND_OLD_IMAGES"), "{msg}");
}

fn kinesis_sample() -> Value {
    json!({
        "awsRegion": "us-east-1",
        "eventID": "b5c1e0f4-2a0c-4c8a-9d9b-3c3b9a0f7c11",
        "eventName": "MODIFY",
        "userIdentity": null,
        "recordFormat": "application/json",
        "tableName": "carts",
        "dynamodb": {
            "ApproximateCreationDateTime": 1_700_000_000_123u64,
            "Keys": {"pk": {"S": "u1"}, "sk": {"N": "7"}},
            "NewImage": {
                "pk": {"S": "u1"}, "sk": {"N": "7"},
                "qty": {"N": "5"},
                "tags": {"SS": ["a", "c"]},
                "blob": {"B": "AAEC"},
                "meta": {"M": {"seen": {"BOOL": true}, "by": {"L": [{"S": "x"}, {"NULL": true}]}}}
            },
            "OldImage": {
                "pk": {"S": "u1"}, "sk": {"N": "7"},
                "qty": {"N": "3"},
                "tags": {"SS": ["a", "b"]},
                "blob": {"B": "AAEC"},
                "meta": {"M": {"seen": {"BOOL": false}}}
            },
            "SizeBytes": 142
        },
        "eventSource": "aws:dynamodb"
    })
}

#[test]
fn kinesis_destination_json_parses() {
    let rec = ChangeRecord::from_json(&kinesis_sample()).expect("parses");
    assert_eq!(rec.event, EventName::Modify);
    assert_eq!(rec.table.as_deref(), Some("carts"));
    assert_eq!(rec.approximate_creation_millis, Some(1_700_000_000_123));
    assert_eq!(rec.keys.get("sk"), Some(&n("7")));
    let new = rec.new_image.as_ref().expect("new image");
    assert_eq!(new.get("blob"), Some(&AttrValue::B(vec![0, 1, 2])));
    let ops = derive(&rec).expect("derives");
    assert_eq!(
        ops,
        vec![
            set_op(
                "meta",
                AttrValue::M(BTreeMap::from([
                    ("by".into(), AttrValue::L(vec![s("x"), AttrValue::Null])),
                    ("seen".into(), AttrValue::Bool(true)),
                ]))
            ),
            Op::Add {
                attr: a("qty"),
                amount: 2
            },
            Op::RemoveFromSet {
                attr: a("tags"),
                elements: strs(&["b"])
            },
            Op::AddToSet {
                attr: a("tags"),
                elements: strs(&["c"])
            },
        ]
    );
    let bytes = serde_json::to_vec(&kinesis_sample()).expect("serializes");
    assert_eq!(ChangeRecord::from_slice(&bytes), Ok(rec));
}

#[test]
fn kinesis_microsecond_timestamps_are_scaled() {
    let mut v = kinesis_sample();
    v["dynamodb"]["ApproximateCreationDateTime"] = json!(1_700_000_000_123_456u64);
    let rec = ChangeRecord::from_json(&v).expect("parses");
    assert_eq!(rec.approximate_creation_millis, Some(1_700_000_000_123));
    v["dynamodb"]["ApproximateCreationDateTimePrecision"] = json!("MICROSECOND");
    v["dynamodb"]["ApproximateCreationDateTime"] = json!(1_000_000u64);
    let rec = ChangeRecord::from_json(&v).expect("parses");
    assert_eq!(rec.approximate_creation_millis, Some(1_000));
}

#[test]
fn streams_json_parses() {
    let v = json!({
        "eventID": "c4ca4238a0b923820dcc509a6f75849b",
        "eventName": "INSERT",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": 1_479_499_740.5,
            "Keys": {"pk": {"S": "u1"}, "sk": {"N": "7"}},
            "NewImage": {
                "pk": {"S": "u1"}, "sk": {"N": "7"},
                "qty": {"N": "1"},
                "prices": {"NS": ["1.50", "2"]}
            },
            "SequenceNumber": "4421584500000000017450439091",
            "SizeBytes": 26,
            "StreamViewType": "NEW_AND_OLD_IMAGES"
        },
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/carts/stream/2016-11-16T20:42:48.104"
    });
    let rec = ChangeRecord::from_json(&v).expect("parses");
    assert_eq!(rec.event, EventName::Insert);
    assert_eq!(rec.table.as_deref(), Some("carts"));
    assert_eq!(rec.approximate_creation_millis, Some(1_479_499_740_500));
    assert_eq!(rec.old_image, None);
    assert_eq!(
        derive(&rec),
        Ok(vec![
            set_op(
                "prices",
                AttrValue::Ns([num("1.5"), num("2")].into_iter().collect())
            ),
            Op::Add {
                attr: a("qty"),
                amount: 1
            },
        ])
    );
    let mut removal = v.clone();
    removal["eventName"] = json!("REMOVE");
    removal["dynamodb"]
        .as_object_mut()
        .expect("object")
        .remove("NewImage");
    let rec = ChangeRecord::from_json(&removal).expect("parses");
    assert_eq!(derive(&rec), Ok(vec![Op::Delete]));
}

#[test]
fn malformed_records_are_refused_with_the_path() {
    assert!(matches!(
        ChangeRecord::from_slice(b"\xff\xfe"),
        Err(RecordError::NotJson { .. })
    ));
    assert!(matches!(
        ChangeRecord::from_slice(b"{not json"),
        Err(RecordError::NotJson { .. })
    ));
    let mut no_event = kinesis_sample();
    no_event
        .as_object_mut()
        .expect("object")
        .remove("eventName");
    assert_eq!(
        ChangeRecord::from_json(&no_event),
        Err(RecordError::MissingField { path: "eventName" })
    );
    let mut unknown = kinesis_sample();
    unknown["eventName"] = json!("UPSERT");
    assert_eq!(
        ChangeRecord::from_json(&unknown),
        Err(RecordError::UnknownEvent {
            name: "UPSERT".into()
        })
    );
    let mut no_dynamodb = kinesis_sample();
    no_dynamodb
        .as_object_mut()
        .expect("object")
        .remove("dynamodb");
    assert_eq!(
        ChangeRecord::from_json(&no_dynamodb),
        Err(RecordError::MissingField { path: "dynamodb" })
    );
    let mut bad_value = kinesis_sample();
    bad_value["dynamodb"]["NewImage"]["qty"] = json!({"N": "NaN"});
    assert!(matches!(
        ChangeRecord::from_json(&bad_value),
        Err(RecordError::BadValue {
            path: "dynamodb.NewImage",
            error: ValueError::At { ref path, .. },
        }) if path == "qty"
    ));
    let mut bad_time = kinesis_sample();
    bad_time["dynamodb"]["ApproximateCreationDateTime"] = json!("yesterday");
    assert!(matches!(
        ChangeRecord::from_json(&bad_time),
        Err(RecordError::BadField {
            path: "dynamodb.ApproximateCreationDateTime",
            ..
        })
    ));
    assert!(matches!(
        ChangeRecord::from_json(&json!([])),
        Err(RecordError::BadField { path: "$", .. })
    ));
}
