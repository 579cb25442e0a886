//! The decisions about a bundle whose signatures already verified: is it for this box, is it
//! newer than what is installed, and is its metadata still valid at a time the box can trust.
//! Pure: the facts come in as values, the answer goes out as a value.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::manifest::{BundleKind, BundleManifest, Version};

/// What the box knows about itself, from its running image (not from the stick).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoxFacts {
    /// The product id compiled into the image (`wardbox`).
    pub product: String,
    /// The CPU architecture of the running image (`x86_64`).
    pub architecture: String,
    /// The version of the running system.
    pub system_version: Version,
    /// When the running image was built: the lowest time the box can be sure has passed.
    pub build_time: Timestamp,
}

/// The anti-rollback floors kept in the state directory: the highest version ever installed on
/// each track, and the newest time the box has proof of (see [`TrustedTime`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Floors {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<Version>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Version>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<Version>,
    /// The `created` time of the newest bundle this box accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Timestamp>,
}

impl Floors {
    /// The version floor of a track.
    pub fn of(&self, kind: BundleKind) -> Option<Version> {
        match kind {
            BundleKind::Full => self.system,
            BundleKind::ModelsOnly => self.models,
            BundleKind::PolicyOnly => self.policy,
        }
    }

    /// Raises (never lowers) the floor of a track.
    pub fn raise(&mut self, kind: BundleKind, version: Version) {
        let slot = match kind {
            BundleKind::Full => &mut self.system,
            BundleKind::ModelsOnly => &mut self.models,
            BundleKind::PolicyOnly => &mut self.policy,
        };
        *slot = Some(slot.map_or(version, |v| v.max(version)));
    }

    /// Raises (never lowers) the time floor.
    pub fn raise_time(&mut self, t: Timestamp) {
        self.time = Some(self.time.map_or(t, |old| old.max(t)));
    }
}

/// The time against which metadata expiry is checked on a box with no time source.
///
/// The real-time clock alone is never trusted: its battery dies (it reads 2000 or 1970) and
/// anyone at the console can set it back to make expired metadata look fresh. So the check
/// time is the newest of: the running image's build time, the time floor (the `created` time of
/// the newest bundle the box accepted), and the clock. Setting the clock back cannot go below
/// the floor; a clock that is right makes expiry real; a clock set far ahead only refuses
/// bundles (the message shows all three times so IT can see why). The clock never raises the
/// stored floor, so a wrong clock cannot lock the box out for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedTime {
    pub build_time: Timestamp,
    pub floor: Option<Timestamp>,
    pub clock: Option<Timestamp>,
}

impl TrustedTime {
    pub fn now(&self) -> Timestamp {
        [Some(self.build_time), self.floor, self.clock].into_iter().flatten().max().unwrap_or(self.build_time)
    }
}

/// Why a verified bundle is not applied to this box.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("this bundle is for product {bundle:?}, but this box is {this_box:?}")]
    OtherProduct { bundle: String, this_box: String },
    #[error("this bundle is for architecture {bundle:?}, but this box is {this_box:?}")]
    OtherArchitecture { bundle: String, this_box: String },
    #[error(
        "this bundle needs system version {needs} or later to start from, but this box runs {installed}; apply an intermediate release first"
    )]
    StartingVersion { needs: Version, installed: Version },
    #[error(
        "downgrade refused: this {kind} bundle is version {bundle}, and version {installed} is already installed (a bundle must be higher; a models bundle may also be the installed version again)"
    )]
    Downgrade { kind: BundleKind, bundle: Version, installed: Version },
    #[error(
        "the bundle's {role} metadata expired at {expired}; the box's trusted time is {now} (image built {build}, newest accepted bundle {floor}, clock {clock})"
    )]
    Expired { role: String, expired: Timestamp, now: Timestamp, build: Timestamp, floor: String, clock: String },
    #[error("the bundle says it was built at {created}, after its {role} metadata expires ({expires})")]
    CreatedAfterExpiry { created: Timestamp, role: String, expires: Timestamp },
}

/// Checks product, architecture, starting version and the version floor.
pub fn decide(m: &BundleManifest, facts: &BoxFacts, floors: &Floors) -> Result<(), Refusal> {
    if m.product != facts.product {
        return Err(Refusal::OtherProduct { bundle: m.product.clone(), this_box: facts.product.clone() });
    }
    if m.compatibility.architecture != facts.architecture {
        return Err(Refusal::OtherArchitecture {
            bundle: m.compatibility.architecture.clone(),
            this_box: facts.architecture.clone(),
        });
    }
    if facts.system_version < m.min_starting_version {
        return Err(Refusal::StartingVersion { needs: m.min_starting_version, installed: facts.system_version });
    }
    // The running system is installed by definition, even on a box whose floors file is new.
    let installed = match m.kind {
        BundleKind::Full => Some(floors.system.map_or(facts.system_version, |f| f.max(facts.system_version))),
        kind => floors.of(kind),
    };
    // Models may be installed again at the installed version: the store holds only what signed
    // bundles brought, so the same signed release puts back what a store lacks (a replacement
    // box restored from a backup, which carries the old box's floors but not its models) or
    // repairs a damaged blob. It cannot take the box back to older models.
    let reinstall = m.kind == BundleKind::ModelsOnly;
    if let Some(installed) = installed
        && (m.version < installed || (m.version == installed && !reinstall))
    {
        return Err(Refusal::Downgrade { kind: m.kind, bundle: m.version, installed });
    }
    Ok(())
}

/// Checks every role's expiry against the trusted time, and that the bundle was not built after
/// its own metadata expires (which would let its `created` time push the floor past it).
pub fn check_expiry(
    expiries: &[(&str, Timestamp)],
    created: Timestamp,
    time: &TrustedTime,
) -> Result<(), Refusal> {
    let now = time.now();
    let show = |t: Option<Timestamp>| t.map_or_else(|| "none".to_owned(), |t| t.to_string());
    for &(role, expires) in expiries {
        if created >= expires {
            return Err(Refusal::CreatedAfterExpiry { created, role: role.to_owned(), expires });
        }
        if now >= expires {
            return Err(Refusal::Expired {
                role: role.to_owned(),
                expired: expires,
                now,
                build: time.build_time,
                floor: show(time.floor),
                clock: show(time.clock),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Compatibility;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn facts() -> BoxFacts {
        BoxFacts {
            product: "wardbox".into(),
            architecture: "x86_64".into(),
            system_version: Version::new(1, 0, 0),
            build_time: ts("2026-01-01T00:00:00Z"),
        }
    }

    fn manifest(kind: BundleKind, version: Version) -> BundleManifest {
        BundleManifest {
            schema: 1,
            product: "wardbox".into(),
            kind,
            version,
            min_starting_version: Version::new(1, 0, 0),
            compatibility: Compatibility { architecture: "x86_64".into() },
            created: ts("2026-06-01T00:00:00Z"),
            contents: vec![],
        }
    }

    #[test]
    fn system_downgrade_counts_the_running_version_and_the_floor() {
        let f = facts();
        assert_eq!(decide(&manifest(BundleKind::Full, Version::new(1, 1, 0)), &f, &Floors::default()), Ok(()));
        let same = decide(&manifest(BundleKind::Full, Version::new(1, 0, 0)), &f, &Floors::default());
        assert!(matches!(same, Err(Refusal::Downgrade { .. })), "{same:?}");
        // A restored old image (running 1.0.0) with the floor at 1.2.0 still refuses 1.1.0.
        let floors = Floors { system: Some(Version::new(1, 2, 0)), ..Floors::default() };
        let err = decide(&manifest(BundleKind::Full, Version::new(1, 1, 0)), &f, &floors).expect_err("floor");
        assert!(err.to_string().contains("version 1.2.0 is already installed"), "{err}");
    }

    #[test]
    fn the_installed_models_version_may_be_installed_again_but_nothing_else_repeats() {
        let f = facts();
        let floors = Floors { models: Some(Version::new(2, 0, 0)), policy: Some(Version::new(2, 0, 0)), ..Floors::default() };
        assert_eq!(decide(&manifest(BundleKind::ModelsOnly, Version::new(2, 0, 0)), &f, &floors), Ok(()));
        let older = decide(&manifest(BundleKind::ModelsOnly, Version::new(1, 9, 9)), &f, &floors);
        assert!(matches!(older, Err(Refusal::Downgrade { .. })), "{older:?}");
        let policy = decide(&manifest(BundleKind::PolicyOnly, Version::new(2, 0, 0)), &f, &floors);
        assert!(matches!(policy, Err(Refusal::Downgrade { .. })), "{policy:?}");
    }

    #[test]
    fn tracks_are_separate() {
        let floors = Floors { models: Some(Version::new(3, 0, 0)), ..Floors::default() };
        let f = facts();
        assert!(decide(&manifest(BundleKind::ModelsOnly, Version::new(2, 0, 0)), &f, &floors).is_err());
        assert_eq!(decide(&manifest(BundleKind::PolicyOnly, Version::new(1, 0, 0)), &f, &floors), Ok(()));
    }

    #[test]
    fn other_product_architecture_and_starting_version() {
        let f = facts();
        let mut m = manifest(BundleKind::Full, Version::new(2, 0, 0));
        m.product = "otherbox".into();
        let err = decide(&m, &f, &Floors::default()).expect_err("product");
        assert_eq!(err.to_string(), "this bundle is for product \"otherbox\", but this box is \"wardbox\"");
        let mut m = manifest(BundleKind::Full, Version::new(2, 0, 0));
        m.compatibility.architecture = "aarch64".into();
        assert!(matches!(decide(&m, &f, &Floors::default()), Err(Refusal::OtherArchitecture { .. })));
        let mut m = manifest(BundleKind::Full, Version::new(2, 0, 0));
        m.min_starting_version = Version::new(1, 5, 0);
        let err = decide(&m, &f, &Floors::default()).expect_err("start");
        assert!(err.to_string().contains("needs system version 1.5.0 or later"), "{err}");
    }

    #[test]
    fn expiry_uses_the_newest_trusted_time_never_the_clock_alone() {
        let created = ts("2026-06-01T00:00:00Z");
        let exp = [("timestamp", ts("2027-01-01T00:00:00Z"))];
        // Clock set back to 2000: the floor still says mid-2027, so the metadata is expired.
        let t = TrustedTime {
            build_time: ts("2026-01-01T00:00:00Z"),
            floor: Some(ts("2027-06-01T00:00:00Z")),
            clock: Some(ts("2000-01-01T00:00:00Z")),
        };
        assert!(matches!(check_expiry(&exp, created, &t), Err(Refusal::Expired { .. })));
        // No floor, dead clock: the build time is what counts, and the metadata is valid.
        let t = TrustedTime { build_time: ts("2026-01-01T00:00:00Z"), floor: None, clock: None };
        assert_eq!(check_expiry(&exp, created, &t), Ok(()));
        // A right clock makes expiry real even when the floor is old.
        let t = TrustedTime { clock: Some(ts("2028-01-01T00:00:00Z")), ..t };
        assert!(matches!(check_expiry(&exp, created, &t), Err(Refusal::Expired { .. })));
        // A bundle built after its own expiry is refused whatever the time.
        let t = TrustedTime { build_time: ts("2020-01-01T00:00:00Z"), floor: None, clock: None };
        let late = ts("2027-02-01T00:00:00Z");
        assert!(matches!(check_expiry(&exp, late, &t), Err(Refusal::CreatedAfterExpiry { .. })));
    }

    #[test]
    fn floors_only_rise() {
        let mut f = Floors::default();
        f.raise(BundleKind::Full, Version::new(2, 0, 0));
        f.raise(BundleKind::Full, Version::new(1, 0, 0));
        assert_eq!(f.system, Some(Version::new(2, 0, 0)));
        f.raise_time(ts("2027-01-01T00:00:00Z"));
        f.raise_time(ts("2026-01-01T00:00:00Z"));
        assert_eq!(f.time, Some(ts("2027-01-01T00:00:00Z")));
    }
}
