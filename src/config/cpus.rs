//! How many CPUs the container may use, for PM2's `instances: max`.
//!
//! PM2 counts the host's CPUs (`os.cpus().length`); in a container limited
//! to two CPUs on a 64-core host that starts 64 instances. procward counts
//! what the container can use: the smallest of the cgroup v2 `cpu.max`
//! quota, the cgroup v1 CFS quota (`cpu.cfs_quota_us / cpu.cfs_period_us`),
//! rounded up, and the CPUs in the affinity mask (sched_getaffinity(2)).

use std::path::{Path, PathBuf};

/// The CPUs available to this process, at least 1.
pub fn available() -> u32 {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let quota = quota_dirs(&cgroup)
        .into_iter()
        .filter_map(|d| quota_in(&d))
        .min();
    let affinity = affinity_count();
    [quota, affinity]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(1)
        .max(1)
}

/// The directories whose quota applies: the process's own cgroup and each
/// of its ancestors (a parent's limit binds the child too), for both
/// hierarchies. `cgroup` is the text of /proc/self/cgroup (cgroups(7)).
fn quota_dirs(cgroup: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for line in cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let mount = if controllers.is_empty() {
            // cgroup v2: "0::/path"; on a hybrid host it lives under unified/.
            if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
                PathBuf::from("/sys/fs/cgroup")
            } else {
                PathBuf::from("/sys/fs/cgroup/unified")
            }
        } else if controllers.split(',').any(|c| c == "cpu") {
            PathBuf::from("/sys/fs/cgroup/cpu")
        } else {
            continue;
        };
        let mut p = Path::new(path.trim_start_matches('/'));
        loop {
            dirs.push(mount.join(p));
            match p.parent() {
                Some(parent) => p = parent,
                None => break,
            }
        }
    }
    dirs
}

/// The quota set in one cgroup directory, in whole CPUs rounded up.
fn quota_in(dir: &Path) -> Option<u32> {
    if let Ok(max) = std::fs::read_to_string(dir.join("cpu.max")) {
        return parse_cpu_max(&max);
    }
    let quota = std::fs::read_to_string(dir.join("cpu.cfs_quota_us")).ok()?;
    let period = std::fs::read_to_string(dir.join("cpu.cfs_period_us")).ok()?;
    parse_cfs(&quota, &period)
}

/// cgroup v2 `cpu.max`: "QUOTA PERIOD" or "max PERIOD" (no limit).
fn parse_cpu_max(text: &str) -> Option<u32> {
    let mut it = text.split_whitespace();
    let quota: u64 = it.next()?.parse().ok()?;
    let period: u64 = it.next().unwrap_or("100000").parse().ok()?;
    cpus(quota, period)
}

/// cgroup v1: `cpu.cfs_quota_us` (-1 for no limit) and `cpu.cfs_period_us`.
fn parse_cfs(quota: &str, period: &str) -> Option<u32> {
    let quota: i64 = quota.trim().parse().ok()?;
    let period: u64 = period.trim().parse().ok()?;
    cpus(u64::try_from(quota).ok()?, period)
}

fn cpus(quota: u64, period: u64) -> Option<u32> {
    (quota > 0 && period > 0).then(|| quota.div_ceil(period).max(1) as u32)
}

fn affinity_count() -> Option<u32> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; the kernel fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        u32::try_from(libc::CPU_COUNT(&set)).ok().filter(|n| *n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_v2_quota_rounds_up() {
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("200000 100000\n"), Some(2));
        assert_eq!(parse_cpu_max("150000 100000\n"), Some(2));
        assert_eq!(parse_cpu_max("50000 100000\n"), Some(1));
    }

    #[test]
    fn cgroup_v1_quota_minus_one_is_no_limit() {
        assert_eq!(parse_cfs("-1\n", "100000\n"), None);
        assert_eq!(parse_cfs("300000\n", "100000\n"), Some(3));
    }

    #[test]
    fn quota_applies_from_every_ancestor() {
        let dirs = quota_dirs("0::/kubepods/pod1/ctr\n");
        assert_eq!(dirs.len(), 4);
        assert!(dirs[0].ends_with("kubepods/pod1/ctr"));
        let v1 = quota_dirs("4:cpu,cpuacct:/docker/abc\n3:memory:/docker/abc\n");
        assert_eq!(
            v1,
            vec![
                PathBuf::from("/sys/fs/cgroup/cpu/docker/abc"),
                PathBuf::from("/sys/fs/cgroup/cpu/docker"),
                PathBuf::from("/sys/fs/cgroup/cpu")
            ]
        );
    }

    #[test]
    fn the_count_is_at_most_the_affinity_mask() {
        let n = available();
        assert!(n >= 1);
        assert!(n <= affinity_count().unwrap());
    }
}
