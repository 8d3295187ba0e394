//! HL7 v2 timestamps to FHIR time forms, honest about precision.
//!
//! HL7 v2 times in SS-MIX2 carry no offset and are Japan Standard Time. FHIR `dateTime` with a
//! time must have seconds and a zone, so `201112202100` becomes `2011-12-20T21:00:00+09:00`.
//! A value given only to the hour (`2011070100`, TQ1-7) is truncated to its date rather than
//! inventing minutes; `199601` stays `1996-01`. Tolerated deviations: 0–4 fractional digits
//! after a dot, and the illegal 15/17-digit forms `YYYYMMDDHHMMSSf(ff)` without a dot.
//!
//! The module also turns FHIR date forms back into the half-open UTC range they cover, which
//! is what date search compares (`2011-07` covers the whole month).

use std::fmt;

/// Offset of Japan Standard Time from UTC, in seconds.
pub const JST_OFFSET_SECONDS: i64 = 9 * 3600;

/// A parsed HL7 v2 `DTM`/`TS`, to the precision it was sent with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hl7Time {
    /// Year, four digits.
    pub year: i32,
    /// Month 1–12, if sent.
    pub month: Option<u8>,
    /// Day of month, if sent.
    pub day: Option<u8>,
    /// Hour 0–23, if sent.
    pub hour: Option<u8>,
    /// Minute, if sent.
    pub minute: Option<u8>,
    /// Second, if sent.
    pub second: Option<u8>,
    /// Fractional-second digits as sent (at most 9), with their count.
    pub fraction: Option<(u32, u8)>,
    /// Offset from UTC in minutes, if sent; absent means JST.
    pub offset_minutes: Option<i32>,
}

/// Why a string is not a usable HL7 timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeError {
    /// The text that was rejected.
    pub text: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl fmt::Display for TimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a valid timestamp: {}",
            self.text, self.reason
        )
    }
}

impl std::error::Error for TimeError {}

fn digits(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

impl Hl7Time {
    /// Parses an HL7 v2 timestamp.
    pub fn parse(text: &str) -> Result<Self, TimeError> {
        let error = |reason| TimeError {
            text: text.to_owned(),
            reason,
        };
        let trimmed = text.trim();
        // Everything below slices by byte position: refuse non-ASCII first.
        if !trimmed.is_ascii() {
            return Err(error("expected ASCII digits"));
        }
        // Split off an explicit offset (+hhmm / -hhmm).
        let (body, offset_minutes) = match trimmed.rfind(['+', '-']) {
            Some(position) if position >= 4 => {
                let (body, zone) = trimmed.split_at(position);
                let sign = if zone.starts_with('-') { -1 } else { 1 };
                let zone_digits = &zone[1..];
                if zone_digits.len() != 4 {
                    return Err(error("offset must be +hhmm or -hhmm"));
                }
                let hours = digits(&zone_digits[..2]).ok_or_else(|| error("bad offset"))?;
                let minutes = digits(&zone_digits[2..]).ok_or_else(|| error("bad offset"))?;
                if hours > 14 || minutes > 59 {
                    return Err(error("offset out of range"));
                }
                (body, Some(sign * (hours as i32 * 60 + minutes as i32)))
            }
            _ => (trimmed, None),
        };
        let (main, fraction_text) = match body.split_once('.') {
            Some((main, fraction)) => (main, Some(fraction)),
            None if body.len() > 14 => (&body[..14], Some(&body[14..])),
            None => (body, None),
        };
        if !main.bytes().all(|b| b.is_ascii_digit()) {
            return Err(error("expected digits"));
        }
        if !matches!(main.len(), 4 | 6 | 8 | 10 | 12 | 14) {
            return Err(error("expected YYYY[MM[DD[HH[MM[SS]]]]]"));
        }
        if fraction_text.is_some() && main.len() != 14 {
            return Err(error("fractional seconds need a full YYYYMMDDHHMMSS"));
        }
        let part = |range: std::ops::Range<usize>| main.get(range).and_then(digits);
        let year = part(0..4).ok_or_else(|| error("bad year"))? as i32;
        let month = part(4..6).map(|v| v as u8);
        let day = part(6..8).map(|v| v as u8);
        let hour = part(8..10).map(|v| v as u8);
        let minute = part(10..12).map(|v| v as u8);
        let second = part(12..14).map(|v| v as u8);
        let fraction = match fraction_text {
            Some("") => None,
            Some(fraction) => {
                if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(error("bad fractional seconds"));
                }
                Some((digits(fraction).unwrap_or(0), fraction.len() as u8))
            }
            None => None,
        };
        if let Some(month) = month {
            if !(1..=12).contains(&month) {
                return Err(error("month out of range"));
            }
            if let Some(day) = day
                && (day == 0 || day > days_in_month(year, month))
            {
                return Err(error("day out of range"));
            }
        }
        if hour.is_some_and(|h| h > 23) {
            return Err(error("hour out of range"));
        }
        if minute.is_some_and(|m| m > 59) {
            return Err(error("minute out of range"));
        }
        if second.is_some_and(|s| s > 59) {
            return Err(error("second out of range"));
        }
        Ok(Self {
            year,
            month,
            day,
            hour,
            minute,
            second,
            fraction,
            offset_minutes,
        })
    }

    /// The FHIR `dateTime` form: partial dates stay partial; an hour without minutes is
    /// truncated to the date; any time gets seconds and the zone (`+09:00` unless sent).
    pub fn to_fhir_datetime(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::with_capacity(32);
        let _ = write!(out, "{:04}", self.year);
        let Some(month) = self.month else { return out };
        let _ = write!(out, "-{month:02}");
        let Some(day) = self.day else { return out };
        let _ = write!(out, "-{day:02}");
        let (Some(hour), Some(minute)) = (self.hour, self.minute) else {
            return out;
        };
        let _ = write!(
            out,
            "T{hour:02}:{minute:02}:{:02}",
            self.second.unwrap_or(0)
        );
        if let (Some(_), Some((value, width))) = (self.second, self.fraction) {
            let _ = write!(out, ".{value:0width$}", width = width as usize);
        }
        out.push_str(&format_offset(
            self.offset_minutes
                .unwrap_or(JST_OFFSET_SECONDS as i32 / 60),
        ));
        out
    }

    /// The FHIR `date` form (for birth dates and other date-only elements).
    pub fn to_fhir_date(&self) -> String {
        let mut out = format!("{:04}", self.year);
        if let Some(month) = self.month {
            out.push_str(&format!("-{month:02}"));
            if let Some(day) = self.day {
                out.push_str(&format!("-{day:02}"));
            }
        }
        out
    }
}

fn format_offset(minutes: i32) -> String {
    if minutes == 0 {
        return "Z".to_owned();
    }
    if minutes == 540 {
        return "+09:00".to_owned();
    }
    let sign = if minutes < 0 { '-' } else { '+' };
    let absolute = minutes.abs();
    format!("{sign}{:02}:{:02}", absolute / 60, absolute % 60)
}

/// Converts an HL7 timestamp to the FHIR `dateTime` form, or explains why it cannot.
pub fn hl7_to_fhir_datetime(text: &str) -> Result<String, TimeError> {
    Hl7Time::parse(text).map(|t| t.to_fhir_datetime())
}

/// True for leap years of the proleptic Gregorian calendar.
pub fn is_leap_year(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Days in the given month.
pub fn days_in_month(year: i32, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
pub fn days_from_civil(year: i32, month: u8, day: u8) -> i64 {
    let year = i64::from(year) - i64::from(month <= 2);
    let era = if year >= 0 { year } else { year - 399 } / 400;
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The civil date of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = (year_of_era + era * 400 + i64::from(month <= 2)) as i32;
    (year, month, day)
}

/// Formats microseconds since the epoch as a FHIR `instant` in JST, to the millisecond, e.g.
/// `2026-11-24T14:30:05.123+09:00`.
///
/// Instants outside the years 0001–9999 (which FHIR cannot write) are clamped to them.
pub fn format_instant_jst(micros: i64) -> String {
    const FIRST: i64 = -62_135_596_800_000_000; // 0001-01-01T00:00:00 local
    const LAST: i64 = 253_402_300_799_999_999; // 9999-12-31T23:59:59.999999 local
    let local = micros
        .saturating_add(JST_OFFSET_SECONDS * 1_000_000)
        .clamp(FIRST, LAST);
    let seconds = local.div_euclid(1_000_000);
    let fraction = local.rem_euclid(1_000_000) / 1000;
    let days = seconds.div_euclid(86_400);
    let second_of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{fraction:03}+09:00",
        second_of_day / 3600,
        (second_of_day / 60) % 60,
        second_of_day % 60
    )
}

/// Formats microseconds since the epoch as an HL7 v2 `TS` in JST, to the millisecond, e.g.
/// `20261124143005.123+0900` (MSH-7 of what Tsunagi sends).
pub fn format_hl7_jst(micros: i64) -> String {
    format_instant_jst(micros)
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '.' || *c == '+')
        .collect()
}

/// The half-open range `[start, end)` in UTC seconds covered by a FHIR `date`, `dateTime` or
/// `instant` string at its precision. Values without a zone are taken as JST. `None` if the
/// string is not a FHIR date form.
pub fn fhir_date_range(text: &str) -> Option<(i64, i64)> {
    let bytes = text.as_bytes();
    let number = |range: std::ops::Range<usize>| -> Option<i64> {
        let slice = text.get(range)?;
        if slice.bytes().all(|b| b.is_ascii_digit()) && !slice.is_empty() {
            slice.parse().ok()
        } else {
            None
        }
    };
    let year = number(0..4)? as i32;
    let jst = JST_OFFSET_SECONDS;
    if bytes.len() == 4 {
        let start = days_from_civil(year, 1, 1) * 86_400 - jst;
        let end = days_from_civil(year + 1, 1, 1) * 86_400 - jst;
        return Some((start, end));
    }
    if bytes.get(4) != Some(&b'-') {
        return None;
    }
    let month = number(5..7)? as u8;
    if !(1..=12).contains(&month) {
        return None;
    }
    if bytes.len() == 7 {
        let start = days_from_civil(year, month, 1) * 86_400 - jst;
        let (next_year, next_month) = if month == 12 {
            (year + 1, 1)
        } else {
            (year, month + 1)
        };
        let end = days_from_civil(next_year, next_month, 1) * 86_400 - jst;
        return Some((start, end));
    }
    if bytes.get(7) != Some(&b'-') {
        return None;
    }
    let day = number(8..10)? as u8;
    if day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let day_start = days_from_civil(year, month, day) * 86_400;
    if bytes.len() == 10 {
        return Some((day_start - jst, day_start - jst + 86_400));
    }
    if bytes.get(10) != Some(&b'T') {
        return None;
    }
    let hour = number(11..13)?;
    let minute = number(14..16)?;
    let second = number(17..19)?;
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = text.get(19..)?;
    if let Some(after_dot) = rest.strip_prefix('.') {
        let digits_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
        if digits_len == 0 {
            return None;
        }
        rest = &after_dot[digits_len..];
    }
    let offset = match rest {
        "" => jst,
        "Z" => 0,
        zone if zone.len() == 6 => {
            let sign = match zone.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let hours: i64 = zone.get(1..3)?.parse().ok()?;
            let minutes: i64 = zone.get(4..6)?.parse().ok()?;
            sign * (hours * 3600 + minutes * 60)
        }
        _ => return None,
    };
    let start = day_start + hour * 3600 + minute * 60 + second - offset;
    // A time to the second covers that second; fractions fall within it.
    Some((start, start + 1))
}

#[cfg(test)]
mod tests {
    #[test]
    fn instants_beyond_fhir_years_are_clamped() {
        assert_eq!(
            super::format_instant_jst(i64::MAX),
            "9999-12-31T23:59:59.999+09:00"
        );
        assert_eq!(
            super::format_instant_jst(i64::MIN),
            "0001-01-01T00:00:00.000+09:00"
        );
    }

    use super::*;

    fn fhir(text: &str) -> String {
        hl7_to_fhir_datetime(text).unwrap()
    }

    #[test]
    fn precision_is_kept_honest() {
        assert_eq!(fhir("201112202100"), "2011-12-20T21:00:00+09:00");
        assert_eq!(fhir("2011070100"), "2011-07-01");
        assert_eq!(fhir("199601"), "1996-01");
        assert_eq!(fhir("1996"), "1996");
        assert_eq!(fhir("20111219"), "2011-12-19");
        assert_eq!(fhir("20111219121551"), "2011-12-19T12:15:51+09:00");
    }

    #[test]
    fn fractional_and_illegal_forms() {
        assert_eq!(
            fhir("20111220224447.3399"),
            "2011-12-20T22:44:47.3399+09:00"
        );
        assert_eq!(fhir("20110701224603.984"), "2011-07-01T22:46:03.984+09:00");
        assert_eq!(fhir("20111220103059."), "2011-12-20T10:30:59+09:00");
        // 17 digits without a dot (illegal DTM, seen in samples).
        assert_eq!(fhir("20080203163012345"), "2008-02-03T16:30:12.345+09:00");
        // 15 digits.
        assert_eq!(fhir("200802031630123"), "2008-02-03T16:30:12.3+09:00");
        assert_eq!(fhir("20111220103059+0000"), "2011-12-20T10:30:59Z");
    }

    #[test]
    fn garbage_is_rejected_with_a_reason() {
        for bad in [
            "",
            "2011-12-20",
            "20111332",
            "20110230",
            "2011122025",
            "abc",
            "201112201261",
        ] {
            assert!(Hl7Time::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn civil_round_trip() {
        for days in [-800_000_i64, -1, 0, 1, 15_000, 20_000, 2_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn instants_are_formatted_in_jst() {
        assert_eq!(format_instant_jst(0), "1970-01-01T09:00:00.000+09:00");
        assert_eq!(
            format_instant_jst(1_700_000_000_123_456),
            "2023-11-15T07:13:20.123+09:00"
        );
        assert_eq!(
            super::format_hl7_jst(1_700_000_000_123_456),
            "20231115071320.123+0900"
        );
    }

    #[test]
    fn date_ranges() {
        let day = fhir_date_range("2011-12-20").unwrap();
        assert_eq!(day.1 - day.0, 86_400);
        let month = fhir_date_range("2011-02").unwrap();
        assert_eq!(month.1 - month.0, 28 * 86_400);
        let year = fhir_date_range("2012").unwrap();
        assert_eq!(year.1 - year.0, 366 * 86_400);
        let instant = fhir_date_range("2011-12-20T21:00:00+09:00").unwrap();
        assert_eq!(instant, (day.0 + 21 * 3600, day.0 + 21 * 3600 + 1));
        assert_eq!(
            fhir_date_range("2011-12-20T12:00:00Z").unwrap().0,
            day.0 + 21 * 3600
        );
        assert!(fhir_date_range("2011-13").is_none());
        assert!(fhir_date_range("garbage").is_none());
    }
}
