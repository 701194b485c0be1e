//! When a kernel message was written, from the time its source printed, and `--since`.
//!
//! Two clocks appear in kernel logs: time since boot (`dmesg`'s `[  420.365809]` and the
//! records of /dev/kmsg) and the wall clock (`dmesg -T`, `journalctl -k`, ISO forms). The
//! formats without a zone (`dmesg -T`, journalctl's short forms) are local time, as both tools
//! print them; `journalctl`'s short form has no year, which is taken as the latest year that
//! does not put the line in the future.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Origin;

/// A point in time as a log line gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stamp {
    /// Time since boot (monotonic, see [`faultline_sys::kmsg::now_since_boot`]).
    SinceBoot(Duration),
    /// Microseconds since the Unix epoch.
    Wall(i64),
}

/// Parses the `when` of a [`super::LogLine`].
pub fn parse_stamp(when: &str) -> Option<Stamp> {
    let when = when.trim();
    if when.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return since_boot(when).map(Stamp::SinceBoot);
    }
    if when.len() >= 19 && when.as_bytes()[4] == b'-' && when.as_bytes()[10] == b'T' {
        return iso(when).map(Stamp::Wall);
    }
    let words: Vec<&str> = when.split_whitespace().collect();
    let (month, day, clock, year) = match words.as_slice() {
        // `dmesg -T`: `Sun Nov 22 06:24:01 2026`.
        [_weekday, month, day, clock, year] => (*month, *day, *clock, Some(year.parse().ok()?)),
        // `journalctl -k`: `Nov 22 06:24:01` or `Nov 22 06:24:01.284474`.
        [month, day, clock] => (*month, *day, *clock, None),
        _ => return None,
    };
    let month = month_number(month)?;
    let day: u32 = day.parse().ok()?;
    let (h, mi, s, frac) = clock_of_day(clock)?;
    let local = |year: i32| Civil {
        year,
        month,
        day,
        h,
        mi,
        s,
    };
    let secs = match year {
        Some(y) => local_to_unix(local(y))?,
        None => {
            let now = now_unix_usec() / 1_000_000;
            let this_year = unix_to_local_year(now)?;
            let t = local_to_unix(local(this_year))?;
            // A line from late December read in January belongs to the year before.
            if t > now + 86_400 {
                local_to_unix(local(this_year - 1))?
            } else {
                t
            }
        }
    };
    Some(Stamp::Wall(secs * 1_000_000 + frac))
}

/// `420.365809` → 420.365809 s.
fn since_boot(s: &str) -> Option<Duration> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    Some(Duration::from_secs(secs.parse().ok()?) + Duration::from_micros(micros(frac)?))
}

/// A decimal fraction's digits as microseconds: `5` → 500000, `284474` → 284474.
fn micros(frac: &str) -> Option<u64> {
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let six: String = frac.chars().chain(std::iter::repeat('0')).take(6).collect();
    six.parse().ok()
}

/// `06:24:01` or `06:24:01.284474`: hours, minutes, seconds, microseconds.
fn clock_of_day(s: &str) -> Option<(u32, u32, u32, i64)> {
    let (hms, frac) = s.split_once(['.', ',']).unwrap_or((s, ""));
    let mut parts = hms.split(':').map(|p| p.parse::<u32>().ok());
    let (h, mi, sec) = (parts.next()??, parts.next()??, parts.next()??);
    if parts.next().is_some() || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    Some((h, mi, sec, micros(frac)? as i64))
}

/// `2026-11-22T06:24:01,538677+00:00` (dmesg), `2026-11-22T06:24:01+0000` and
/// `2026-11-22T06:24:01.284474+00:00` (journalctl short-iso[-precise]), `...Z`; local time
/// when no zone is given.
fn iso(s: &str) -> Option<i64> {
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let rest = &s[11..];
    let zone_at = rest.find(['+', '-', 'Z']).unwrap_or(rest.len());
    let (h, mi, sec, frac) = clock_of_day(&rest[..zone_at])?;
    let civil = Civil {
        year: year as i32,
        month: month as u32,
        day: day as u32,
        h,
        mi,
        s: sec,
    };
    let zone = &rest[zone_at..];
    let secs = if zone.is_empty() {
        local_to_unix(civil)?
    } else {
        civil.utc_unix()? - zone_offset(zone)?
    };
    Some(secs * 1_000_000 + frac)
}

/// `Z`, `+00:00`, `-0500`, `+05` → seconds east of UTC.
fn zone_offset(z: &str) -> Option<i64> {
    if z == "Z" {
        return Some(0);
    }
    let sign = match z.as_bytes()[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let digits: String = z[1..].chars().filter(|c| *c != ':').collect();
    let (h, m) = match digits.len() {
        2 => (digits.parse::<i64>().ok()?, 0),
        4 => (digits[..2].parse().ok()?, digits[2..].parse().ok()?),
        _ => return None,
    };
    Some(sign * (h * 3600 + m * 60))
}

fn month_number(name: &str) -> Option<u32> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    MONTHS.iter().position(|m| *m == name).map(|i| i as u32 + 1)
}

#[derive(Debug, Clone, Copy)]
struct Civil {
    year: i32,
    month: u32,
    day: u32,
    h: u32,
    mi: u32,
    s: u32,
}

impl Civil {
    /// Seconds since the epoch of this date and time taken as UTC: the days-from-civil
    /// arithmetic of the proleptic Gregorian calendar (eras of 400 years, March-based years).
    fn utc_unix(self) -> Option<i64> {
        if !(1..=12).contains(&self.month) || !(1..=31).contains(&self.day) {
            return None;
        }
        let y = self.year as i64 - i64::from(self.month <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = self.month as i64;
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + self.day as i64 - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        Some(days * 86_400 + (self.h * 3600 + self.mi * 60 + self.s) as i64)
    }
}

/// Seconds since the epoch of a local date and time, as mktime(3) reads them (the TZ
/// environment variable or /etc/localtime, daylight saving time looked up).
fn local_to_unix(c: Civil) -> Option<i64> {
    c.utc_unix()?; // rejects impossible months and days that mktime would normalise
                   // SAFETY: an all-zero `struct tm` is a valid value; every field mktime reads is set below.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    tm.tm_year = c.year - 1900;
    tm.tm_mon = c.month as i32 - 1;
    tm.tm_mday = c.day as i32;
    tm.tm_hour = c.h as i32;
    tm.tm_min = c.mi as i32;
    tm.tm_sec = c.s as i32;
    tm.tm_isdst = -1;
    // SAFETY: `tm` is a valid, initialised struct tm that mktime may normalise in place.
    let t = unsafe { libc::mktime(&mut tm) };
    (t != -1).then_some(t)
}

/// The local calendar year at `unix` seconds.
fn unix_to_local_year(unix: i64) -> Option<i32> {
    // SAFETY: as above, all-zero is a valid `struct tm` for localtime_r to fill.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let t: libc::time_t = unix;
    // SAFETY: both pointers are valid for the call; localtime_r is the thread-safe form.
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    ok.then_some(tm.tm_year + 1900)
}

fn now_unix_usec() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// `--since DURATION`: `30s`, `5m`, `2h`, `1d`, or sums like `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!("{text:?} is not a duration: use a number and a unit, e.g. 30s, 5m, 2h, 1d, 1h30m")
    };
    let mut total = Duration::ZERO;
    let mut digits = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        total += Duration::from_secs(n.checked_mul(unit).ok_or_else(bad)?);
        digits.clear();
    }
    if !digits.is_empty() || total.is_zero() {
        return Err(
            if total.is_zero() && digits.is_empty() && !text.trim().is_empty() {
                format!("{text:?}: a window of zero keeps nothing; give a positive duration")
            } else {
                bad()
            },
        );
    }
    Ok(total)
}

/// `--since`: which lines are recent enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub since: Duration,
    /// Now on the boot clock and on the wall clock.
    boot_now: Duration,
    wall_now_usec: i64,
}

impl Window {
    /// The last `since`, up to now.
    pub fn new(since: Duration) -> Window {
        Window::at(
            since,
            faultline_sys::kmsg::now_since_boot(),
            now_unix_usec(),
        )
    }

    /// The last `since` up to a given now (`boot_now` since boot, `wall_now_usec` since the
    /// epoch), for tests.
    pub fn at(since: Duration, boot_now: Duration, wall_now_usec: i64) -> Window {
        Window {
            since,
            boot_now,
            wall_now_usec,
        }
    }

    /// Whether a line stamped `stamp` falls inside the window. A line without a time is kept
    /// (nothing says it is old). Times since boot in a saved capture are read as this boot's:
    /// a time past this machine's uptime proves the capture is from another boot, where they
    /// mean nothing, and is an error rather than a silent guess.
    pub fn admits(&self, stamp: Option<Stamp>, origin: Origin) -> Result<bool, String> {
        match stamp {
            None => Ok(true),
            Some(Stamp::Wall(t)) => Ok(t
                >= self
                    .wall_now_usec
                    .saturating_sub(self.since.as_micros() as i64)),
            Some(Stamp::SinceBoot(t)) => {
                if origin == Origin::Capture && t > self.boot_now + Duration::from_secs(1) {
                    return Err(format!(
                        "--since: the capture's times since boot ({:.0} s) run past this machine's uptime ({:.0} s): it comes from another boot, where they cannot be placed; use a capture with wall-clock times (dmesg -T, journalctl -k)",
                        t.as_secs_f64(),
                        self.boot_now.as_secs_f64()
                    ));
                }
                Ok(t + self.since >= self.boot_now)
            }
        }
    }

    /// How long before now `stamp` was, when the clocks allow it.
    pub fn age(&self, stamp: Stamp, origin: Origin) -> Option<Duration> {
        age_at(stamp, origin, self.boot_now, self.wall_now_usec)
    }
}

/// How long ago `stamp` was: wall-clock stamps always, times since boot only from the live log
/// (a capture may come from another boot).
pub fn age(stamp: Stamp, origin: Origin) -> Option<Duration> {
    age_at(
        stamp,
        origin,
        faultline_sys::kmsg::now_since_boot(),
        now_unix_usec(),
    )
}

fn age_at(stamp: Stamp, origin: Origin, boot_now: Duration, wall_now: i64) -> Option<Duration> {
    match stamp {
        Stamp::Wall(t) => u64::try_from(wall_now - t).ok().map(Duration::from_micros),
        Stamp::SinceBoot(t) if origin == Origin::Live => boot_now.checked_sub(t),
        Stamp::SinceBoot(_) => None,
    }
}

/// `3 min`, `2 h`, `5 d`: an age for people.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
        Civil {
            year: y,
            month: mo,
            day: d,
            h,
            mi,
            s,
        }
        .utc_unix()
        .unwrap()
    }

    #[test]
    fn civil_arithmetic() {
        assert_eq!(utc(1970, 1, 1, 0, 0, 0), 0);
        // `date -u -d 2026-11-22T06:24:01 +%s`
        assert_eq!(utc(2026, 11, 22, 6, 24, 1), 1_795_328_641);
        assert_eq!(utc(2000, 2, 29, 0, 0, 0), 951_782_400);
    }

    // The `when` of real lines from the fixtures and from `dmesg --time-format iso`.
    #[test]
    fn parses_every_time_the_captures_carry() {
        assert_eq!(
            parse_stamp("424.886668"),
            Some(Stamp::SinceBoot(Duration::from_micros(424_886_668)))
        );
        let iso = Stamp::Wall(1_795_328_641_538_677);
        assert_eq!(parse_stamp("2026-11-22T06:24:01,538677+00:00"), Some(iso));
        assert_eq!(parse_stamp("2026-11-22T07:24:01.538677+01:00"), Some(iso));
        assert_eq!(
            parse_stamp("2026-11-22T06:24:01+0000"),
            Some(Stamp::Wall(1_795_328_641_000_000))
        );
        assert_eq!(
            parse_stamp("2026-11-22T06:24:01Z"),
            Some(Stamp::Wall(1_795_328_641_000_000))
        );
        // Local-time forms: compare with what mktime makes of the same fields.
        let local = local_to_unix(Civil {
            year: 2026,
            month: 11,
            day: 22,
            h: 6,
            mi: 24,
            s: 1,
        })
        .unwrap();
        assert_eq!(
            parse_stamp("Sun Nov 22 06:24:01 2026"),
            Some(Stamp::Wall(local * 1_000_000))
        );
        match parse_stamp("Nov 22 06:30:56.284474") {
            Some(Stamp::Wall(t)) => assert_eq!(t.rem_euclid(1_000_000), 284_474),
            other => panic!("{other:?}"),
        }
        for bad in [
            "",
            "Foo 22 06:30:56",
            "Nov 22 25:30:56",
            "2026-13-22T06:24:01Z",
            "12:3",
        ] {
            assert_eq!(parse_stamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        for bad in [
            "",
            "5",
            "m",
            "5x",
            "-5m",
            "5 m",
            "0s",
            "99999999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_duration("0m").unwrap_err().contains("zero"));
    }

    #[test]
    fn window_on_both_clocks() {
        let now_wall = 1_795_328_641_000_000;
        let w = Window::at(
            Duration::from_secs(300),
            Duration::from_secs(1000),
            now_wall,
        );
        let boot = |s| Some(Stamp::SinceBoot(Duration::from_secs(s)));
        assert_eq!(w.admits(boot(700), Origin::Live), Ok(true));
        assert_eq!(w.admits(boot(699), Origin::Live), Ok(false));
        assert_eq!(w.admits(None, Origin::Capture), Ok(true));
        let wall = |ago: i64| Some(Stamp::Wall(now_wall - ago * 1_000_000));
        assert_eq!(w.admits(wall(299), Origin::Capture), Ok(true));
        assert_eq!(w.admits(wall(301), Origin::Capture), Ok(false));
        // A saved capture whose times since boot exceed the uptime is from another boot.
        assert!(w.admits(boot(5000), Origin::Capture).is_err());
        assert_eq!(
            w.age(Stamp::SinceBoot(Duration::from_secs(400)), Origin::Live),
            Some(Duration::from_secs(600))
        );
        assert_eq!(
            w.age(Stamp::SinceBoot(Duration::from_secs(400)), Origin::Capture),
            None
        );
    }
}
