//! Which tables are captured: include and exclude lists of `db.table`
//! patterns, where `*` matches any run of characters. A table is captured when
//! it matches an include pattern (or the include list is empty) and matches no
//! exclude pattern. Matching is exact and case-sensitive, as MariaDB table
//! names are on Linux.

/// Table include/exclude lists.
#[derive(Debug, Clone, Default)]
pub struct TableFilter {
    include: Vec<String>,
    exclude: Vec<String>,
}

impl TableFilter {
    /// A filter from `db.table` patterns.
    pub fn new(include: Vec<String>, exclude: Vec<String>) -> Self {
        Self { include, exclude }
    }

    /// Whether `db.table` is captured.
    pub fn captures(&self, db: &str, table: &str) -> bool {
        let name = format!("{db}.{table}");
        let included = self.include.is_empty() || self.include.iter().any(|p| glob(p, &name));
        included && !self.exclude.iter().any(|p| glob(p, &name))
    }
}

/// `*`-only glob matching, iterative with backtracking to the last star.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_stars() {
        assert!(glob("payments.*", "payments.users"));
        assert!(glob("*.purch*s", "payments.purchases"));
        assert!(glob("a.b", "a.b"));
        assert!(!glob("a.b", "a.bc"));
        assert!(!glob("payments.*", "other.users"));
        assert!(glob("*", ""));
    }

    #[test]
    fn include_then_exclude() {
        let f = TableFilter::new(vec!["payments.*".into()], vec!["payments.audit_*".into()]);
        assert!(f.captures("payments", "purchases"));
        assert!(!f.captures("payments", "audit_log"));
        assert!(!f.captures("mysql", "user"));
        let all = TableFilter::default();
        assert!(all.captures("anything", "at_all"));
    }
}
