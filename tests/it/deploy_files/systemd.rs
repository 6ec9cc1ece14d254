//! deploy/regcache.service: agrees with the documented configuration it installs, and
//! `systemd-analyze verify` accepts it.

use std::path::Path;
use std::process::Command;

use super::{read, regcache_config};
use crate::support::tools;

/// The value of every `Key=` line of a unit file.
fn unit_values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .collect()
}

fn systemd_analyze_verify(tool: &Path, unit: &Path) -> (bool, String) {
    let out = Command::new(tool)
        .arg("verify")
        .arg("--man=no")
        .arg(unit)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn systemd_unit_verifies() {
    let unit = read("deploy/regcache.service");

    // The unit agrees with the documented configuration it installs.
    let example = regcache_config("etc/regcache.toml", &read("etc/regcache.toml"));
    let state = unit_values(&unit, "StateDirectory");
    assert_eq!(
        example.cache.dir,
        Path::new("/var/lib").join(state[0]),
        "etc/regcache.toml keeps the cache in the unit's StateDirectory"
    );
    let stop = unit_values(&unit, "TimeoutStopSec")[0];
    let stop = regcache::config::parse_duration(stop)
        .or_else(|_| regcache::config::parse_duration(&format!("{stop}s")))
        .unwrap();
    // The whole shutdown takes shutdown_grace and about a second more; leave room beyond that.
    assert!(
        stop >= example.shutdown_grace + std::time::Duration::from_secs(5),
        "TimeoutStopSec {stop:?} must exceed shutdown_grace {:?} by 5 s or more",
        example.shutdown_grace
    );
    for exec in unit_values(&unit, "ExecStart")
        .into_iter()
        .chain(unit_values(&unit, "ExecStartPre"))
    {
        assert!(
            exec.starts_with("/usr/local/bin/regcache ")
                && exec.contains("--config /etc/regcache/regcache.toml"),
            "{exec}"
        );
    }

    let Some(tool) = tools::find("systemd-analyze") else {
        tools::missing(
            "systemd_unit_verifies",
            &["systemd-analyze".into()],
            "Install it with: apt-get install -y systemd",
        );
        return;
    };
    // `verify` checks that ExecStart binaries exist: verify a copy that runs the binary this
    // test suite built instead of /usr/local/bin/regcache.
    let bin = env!("CARGO_BIN_EXE_regcache");
    assert!(
        !bin.contains(char::is_whitespace),
        "{bin}: a path systemd would need quoted"
    );
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("regcache.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/regcache", bin)).unwrap();

    // First make sure verify really checks units here (it needs no running systemd, but an
    // environment where it silently checks nothing must not pass): a bad key must be reported.
    let broken = dir.path().join("regcache-broken.service");
    std::fs::write(
        &broken,
        unit.replace("/usr/local/bin/regcache", bin)
            .replace("[Service]\n", "[Service]\nNoSuchSetting=yes\n"),
    )
    .unwrap();
    let (_, broken_out) = systemd_analyze_verify(&tool, &broken);
    assert!(
        broken_out.contains("NoSuchSetting"),
        "systemd-analyze verify did not report an unknown key, so it cannot check the unit in \
         this environment; it printed:\n{broken_out}"
    );

    let (ok, out) = systemd_analyze_verify(&tool, &copy);
    let about_unit: Vec<&str> = out.lines().filter(|l| l.contains("regcache")).collect();
    assert!(
        ok && about_unit.is_empty(),
        "systemd-analyze verify deploy/regcache.service (ExecStart pointed at {bin}):\n{out}"
    );
    if !out.trim().is_empty() {
        eprintln!("systemd-analyze verify printed (not about regcache.service):\n{out}");
    }
}
