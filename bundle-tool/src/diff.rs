//! `diff`: what changes between two bundles (zips or folders): AP image families added,
//! removed and changed, other files, and the versions.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::check::{FileReport, Report, Role};

/// A file present in both with different content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Changed {
    /// The file.
    pub name: String,
    /// Size in A.
    pub size_a: u64,
    /// Size in B.
    pub size_b: u64,
    /// SHA-256 in A.
    pub sha256_a: Option<String>,
    /// SHA-256 in B.
    pub sha256_b: Option<String>,
}

/// A value in A and in B.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pair {
    /// In A.
    pub a: Option<String>,
    /// In B.
    pub b: Option<String>,
    /// They differ.
    pub changed: bool,
}

impl Pair {
    fn new(a: Option<String>, b: Option<String>) -> Pair {
        let changed = a != b;
        Pair { a, b, changed }
    }
}

/// Files of one kind that differ.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    /// Only in B.
    pub added: Vec<String>,
    /// Only in A.
    pub removed: Vec<String>,
    /// In both, different.
    pub changed: Vec<Changed>,
    /// In both, identical.
    pub unchanged: Vec<String>,
}

/// What `diff` reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diff {
    /// Bundle A.
    pub a: String,
    /// Bundle B.
    pub b: String,
    /// `version.info`.
    pub version: Pair,
    /// `controller_version.info`.
    pub controller_version: Pair,
    /// AP image families.
    pub families: Changes,
    /// Every other file.
    pub other_files: Changes,
    /// Nothing differs.
    pub identical: bool,
}

/// Compares two hashed reports.
pub fn diff(a: &Report, b: &Report) -> Diff {
    let split = |r: &Report| {
        let mut images = BTreeMap::new();
        let mut others = BTreeMap::new();
        for f in &r.files {
            let map = if f.role == Role::Image {
                &mut images
            } else {
                &mut others
            };
            map.insert(f.name.clone(), f.clone());
        }
        (images, others)
    };
    let (ia, oa) = split(a);
    let (ib, ob) = split(b);
    let families = compare(&ia, &ib);
    let other_files = compare(&oa, &ob);
    let version = Pair::new(a.version.clone(), b.version.clone());
    let controller_version = Pair::new(a.controller_version.clone(), b.controller_version.clone());
    let quiet = |c: &Changes| c.added.is_empty() && c.removed.is_empty() && c.changed.is_empty();
    let identical =
        quiet(&families) && quiet(&other_files) && !version.changed && !controller_version.changed;
    Diff {
        a: a.bundle.clone(),
        b: b.bundle.clone(),
        version,
        controller_version,
        families,
        other_files,
        identical,
    }
}

fn compare(a: &BTreeMap<String, FileReport>, b: &BTreeMap<String, FileReport>) -> Changes {
    let mut c = Changes::default();
    for (name, fa) in a {
        match b.get(name) {
            None => c.removed.push(name.clone()),
            Some(fb) if fa.size != fb.size || fa.sha256 != fb.sha256 => c.changed.push(Changed {
                name: name.clone(),
                size_a: fa.size,
                size_b: fb.size,
                sha256_a: fa.sha256.clone(),
                sha256_b: fb.sha256.clone(),
            }),
            Some(_) => c.unchanged.push(name.clone()),
        }
    }
    c.added = b.keys().filter(|n| !a.contains_key(*n)).cloned().collect();
    c
}
