//! The annotation step of phase 5: each released record under objection gets `_objections`,
//! each record carrying its subject's statements (本人声明) gets `_statements`, the same for
//! every reader. Neither is masked (the subject wrote the statements to be read with the
//! record); both are bounded in count and bytes where they are built
//! (`workflows::marks`, `workflows::statements`).
//!
//! The policy engine puts what the annotator answers under the one key `_objections`. A record
//! with statements is answered with both parts wrapped under `WRAPPED`, and `unwrap` then
//! moves them to their own keys: the engine stays unchanged, and a record is still looked up
//! by its id read before masking.

use serde_json::{Map, Value, json};

use crate::{
    domain::SubjectType,
    policy::{ApplyCtx, Outcome, Plan},
    services::Core,
};

/// A key no catalogued field can have (a store's uncatalogued fields are removed before).
const WRAPPED: &str = "\u{0}credgate:annotations";
const OBJECTIONS: &str = "_objections";
const STATEMENTS: &str = "_statements";

/// Applies the plan with the annotations this store's records call for: the masked outcome,
/// and whether an annotated record is still under an open objection. A completed restriction
/// first withholds its subject's records, in every dataset of the store (the single record
/// and the list row alike), from every reader but a full-history one, who sees them marked.
pub fn apply(
    state: &Core,
    plan: &Plan,
    store: &str,
    doc: &mut Value,
    ctx: &ApplyCtx<'_>,
) -> (Outcome, bool) {
    let restricted = state.marks.restrictions.has(store);
    let mut withheld = Outcome::default();
    if restricted && !plan.sees_full_history() {
        let kinds = kinds_of(plan);
        let is_restricted = |id: &str| {
            kinds
                .iter()
                .any(|k| state.marks.restrictions.mark(store, *k, id).is_some())
        };
        plan.withhold_subjects(doc, &is_restricted, &mut withheld);
        if withheld.out_of_scope {
            return (withheld, false);
        }
    }
    let show_restrictions = restricted && plan.sees_full_history();
    let (mut outcome, pending) = annotated(state, plan, store, doc, ctx, show_restrictions);
    outcome.withheld_records += withheld.withheld_records;
    (outcome, pending)
}

/// The plan applied with marks (objections, open requests, restrictions when
/// `show_restrictions`) and statements on each record.
fn annotated(
    state: &Core,
    plan: &Plan,
    store: &str,
    doc: &mut Value,
    ctx: &ApplyCtx<'_>,
    show_restrictions: bool,
) -> (Outcome, bool) {
    let kinds = kinds_of(plan);
    let (marked, stated) = (
        state.marks.has_store(store) || show_restrictions,
        state.statements.has_store(store) && shows_statements(plan),
    );
    if !marked && !stated {
        return (plan.apply(doc, ctx), false);
    }
    let (mut pending, mut wrapped) = (false, false);
    let mut note = |id: &str| {
        let find = |f: &dyn Fn(SubjectType) -> Option<Value>| kinds.iter().find_map(|k| f(*k));
        let mut marks = marked
            .then(|| {
                kinds
                    .iter()
                    .find_map(|k| state.marks.annotation(store, *k, id))
            })
            .flatten();
        let restriction = show_restrictions
            .then(|| find(&|k| state.marks.restrictions.mark(store, k, id)))
            .flatten();
        if let Some(r) = restriction {
            marks = Some(with_restriction(marks, r));
        }
        let said = stated
            .then(|| find(&|k| state.statements.annotation((store, &plan.dataset), k, id)))
            .flatten();
        pending |= marks.as_ref().is_some_and(|(_, open)| *open);
        match (marks, said) {
            (marks, None) => marks.map(|(v, _)| v),
            (marks, Some(said)) => {
                wrapped = true;
                let mut parts = Map::new();
                if let Some((v, _)) = marks {
                    parts.insert(OBJECTIONS.into(), v);
                }
                parts.insert(STATEMENTS.into(), said);
                Some(json!({ WRAPPED: parts }))
            }
        }
    };
    let outcome = plan.apply_annotated(doc, ctx, Some(&mut note));
    if wrapped {
        unwrap(doc);
    }
    (outcome, pending)
}

/// A dataset that declares no subject type: its ids are looked up as either.
fn kinds_of(plan: &Plan) -> &'static [SubjectType] {
    match plan.subject_type() {
        Some(SubjectType::Legal) => &[SubjectType::Legal],
        Some(SubjectType::Natural) => &[SubjectType::Natural],
        None => &[SubjectType::Legal, SubjectType::Natural],
    }
}

/// A record's marks with its restriction added first (a full-history reader is told the
/// record is restricted; the restriction is not pending review).
fn with_restriction(marks: Option<(Value, bool)>, restriction: Value) -> (Value, bool) {
    let (list, pending) = match marks {
        Some((Value::Array(list), pending)) => (list, pending),
        Some((other, pending)) => (vec![other], pending),
        None => (Vec::new(), false),
    };
    let mut all = vec![restriction];
    all.extend(list);
    (Value::Array(all), pending)
}

/// Statements (本人声明) are the subject's own words about their record: for the readers the
/// record is released to with its detail, not for the public tier (T1), which sees the
/// disclosure minimum only (issue 15 item 5).
fn shows_statements(plan: &Plan) -> bool {
    plan.clearance > crate::policy::Tier::T1
}

/// Moves every wrapped annotation to its own keys. Records sit at the root or in the rows of a
/// list; the walk visits each value once, and runs only when a statement was added.
fn unwrap(v: &mut Value) {
    match v {
        Value::Object(map) => {
            let parts = match map.get_mut(OBJECTIONS) {
                Some(Value::Object(o)) if o.len() == 1 && o.contains_key(WRAPPED) => {
                    o.remove(WRAPPED)
                }
                _ => None,
            };
            if let Some(Value::Object(parts)) = parts {
                map.remove(OBJECTIONS);
                map.extend(parts);
            }
            map.values_mut().for_each(unwrap);
        }
        Value::Array(items) => items.iter_mut().for_each(unwrap),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_annotations_move_to_their_own_keys_and_nothing_else_does() {
        let mut doc = json!({"items": [
            {"uscc": "A", "_objections": {WRAPPED: {"_statements": ["s"], "_objections": ["o"]}}},
            {"uscc": "B", "_objections": ["o only"]},
            {"uscc": "C", "_objections": {WRAPPED: {"_statements": ["s"]}}},
        ]});
        unwrap(&mut doc);
        assert_eq!(
            doc,
            json!({"items": [
                {"uscc": "A", "_objections": ["o"], "_statements": ["s"]},
                {"uscc": "B", "_objections": ["o only"]},
                {"uscc": "C", "_statements": ["s"]},
            ]})
        );
    }
}
