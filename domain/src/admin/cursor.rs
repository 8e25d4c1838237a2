//! Keyset cursors of the lists that page in the database: the sort key of the last row shown,
//! tagged with the list it belongs to, base64url (safe in a query string unencoded). A cursor
//! names a position, not a row, so it keeps working while rows are added or removed. One that
//! this API did not return (or that belongs to another list) is refused as invalid (422).

use base64::Engine;
use sea_orm::ExprTrait;

use crate::error::{DomainError, DomainResult};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The cursor after `key` in list `list`.
pub fn encode(list: &str, key: &str) -> String {
    B64.encode(format!("{list}\u{1f}{key}"))
}

/// The key in cursor `c` of list `list`; `None` for no (or an empty) cursor.
pub fn decode(list: &str, c: Option<&str>) -> DomainResult<Option<String>> {
    let Some(c) = c.filter(|c| !c.is_empty()) else {
        return Ok(None);
    };
    let bad = || DomainError::invalid("cursor", "is not a cursor this API returned");
    let raw = B64.decode(c).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    match text.split_once('\u{1f}') {
        Some((l, key)) if l == list && !key.is_empty() => Ok(Some(key.to_owned())),
        _ => Err(bad()),
    }
}

/// Cut `rows`, fetched with `limit + 1`, to one page: the cursor after its last row (by
/// `key`) when another row was there, else `None`.
pub fn page<T>(
    rows: &mut Vec<T>,
    limit: u64,
    list: &str,
    key: impl Fn(&T) -> &str,
) -> Option<String> {
    if rows.len() as u64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|r| encode(list, key(r)))
    } else {
        None
    }
}

/// `limit` as the lists take it: 50 by default, 1 to 500.
pub fn limit(limit: Option<u64>) -> u64 {
    limit.unwrap_or(50).clamp(1, 500)
}

/// "One of `columns` contains `text`", case-insensitively (both sides lower-cased): the
/// lists' `q`. `None` when there is no text to look for.
pub fn contains_any(
    text: Option<&str>,
    columns: impl IntoIterator<Item = sea_orm::sea_query::SimpleExpr>,
) -> Option<sea_orm::Condition> {
    use sea_orm::sea_query::{Expr, Func, LikeExpr};
    let t = text
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty())?;
    Some(
        columns
            .into_iter()
            .fold(sea_orm::Condition::any(), |c, col| {
                c.add(
                    Expr::expr(Func::lower(col))
                        .like(LikeExpr::new(contains_pattern(&t)).escape('\\')),
                )
            }),
    )
}

/// A `LIKE` pattern that matches `text` anywhere (its `%`, `_` and `\` taken literally, with
/// `\` as the escape character).
pub fn contains_pattern(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    p.push('%');
    for ch in text.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(ch);
    }
    p.push('%');
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_and_a_forged_one_is_refused() {
        let c = encode("users", "a@example.com");
        assert_eq!(
            decode("users", Some(&c)).unwrap().as_deref(),
            Some("a@example.com")
        );
        assert!(decode("groups", Some(&c)).is_err(), "another list's cursor");
        assert!(decode("users", Some("a@example.com")).is_err(), "a raw key");
        assert!(decode("users", Some("!!!")).is_err());
        assert!(decode("users", Some(&B64.encode("users"))).is_err());
        assert_eq!(decode("users", Some("")).unwrap(), None);
        assert_eq!(decode("users", None).unwrap(), None);
    }

    #[test]
    fn like_patterns_take_wildcards_literally() {
        assert_eq!(contains_pattern("a_b%c\\"), "%a\\_b\\%c\\\\%");
    }
}
