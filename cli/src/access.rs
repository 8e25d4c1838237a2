//! `wardenctl access`: just-in-time access from the command line: ask for a role for a while
//! with a reason, and (for approvers) approve or deny; Warden applies the same rules as in the
//! console (who may decide, two approvals for write roles, maximum durations).

use serde_json::Value;
use warden_domain::dto::{CreateAccessRequest, DecideAccessRequest};

use crate::client::{seg, Api};

/// `90s`, `30m`, `8h`, `2d` (or a number of seconds) as seconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: i64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 30m, 8h, 2d)"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(format!("{s:?}: the unit is s, m, h or d")),
    };
    n.checked_mul(unit)
        .filter(|secs| *secs > 0)
        .ok_or_else(|| format!("{s:?} is not a positive duration"))
}

/// Seconds as the shortest of `2d`, `8h`, `30m`, `90s`.
pub fn duration_text(secs: i64) -> String {
    match secs {
        s if s > 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s > 0 && s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Ask for access (`break_glass`: take a break-glass role at once, without approval).
pub async fn request(
    api: &Api,
    ask: &CreateAccessRequest,
    break_glass: bool,
) -> anyhow::Result<Value> {
    let path = if break_glass {
        "/api/v1/access-requests/break-glass"
    } else {
        "/api/v1/access-requests"
    };
    Ok(api.post(path, ask).await?)
}

/// `approve`, `deny`, `cancel` or `revoke` a request.
pub async fn decide(
    api: &Api,
    id: &str,
    verb: &str,
    decision: &DecideAccessRequest,
) -> anyhow::Result<Value> {
    let path = format!("/api/v1/access-requests/{}/{verb}", seg(id));
    Ok(api.post(&path, decision).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_and_print_in_the_largest_whole_unit() {
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("30m"), Ok(1_800));
        assert_eq!(parse_duration("8h"), Ok(28_800));
        assert_eq!(parse_duration("2d"), Ok(172_800));
        assert_eq!(parse_duration("120"), Ok(120));
        for bad in ["", "h", "0m", "-5m", "5w", "99999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(duration_text(172_800), "2d");
        assert_eq!(duration_text(5_400), "90m");
        assert_eq!(duration_text(61), "61s");
    }
}
