//! The installation files agree with each other and with the hub: the
//! config template is one the hub loads, and the systemd unit, the
//! Debian package's metadata and its maintainer script name the same
//! binary, config, data directory and user. `packaging/check-deb` checks
//! the built package itself (root and a few minutes: not in every run).

use std::path::{Path, PathBuf};
use tongbao_server::HubConfig;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn read(path: &str) -> Result<String, std::io::Error> {
    std::fs::read_to_string(repo().join(path))
}

/// The values of `key=` lines of the unit, in order.
fn unit_values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

#[test]
fn the_config_template_is_one_the_hub_loads() -> TestResult {
    let config = HubConfig::load(&repo().join("packaging/hub.toml.example"))?;
    assert_eq!(config.hub.data_dir, Path::new("/var/lib/tongbao"));
    assert!(config.hub.fsync, "the template must keep fsync on");
    assert!(config.hub.listen.ip().is_loopback());
    assert!(config.operators.is_empty(), "the template registers nobody");
    assert!(config.units.is_empty(), "the template seeds no unit");
    Ok(())
}

#[test]
fn the_unit_runs_the_packaged_hub_as_its_own_user_writing_only_its_data() -> TestResult {
    let unit = read("examples/systemd/tongbao-hub.service")?;
    let exec = unit_values(&unit, "ExecStart");
    assert_eq!(exec.len(), 1);
    let args: Vec<&str> = exec[0].split_whitespace().collect();
    assert_eq!(args.first(), Some(&"/usr/bin/tongbao-hub"));
    let after = |flag: &str| {
        args.iter()
            .position(|a| *a == flag)
            .and_then(|i| args.get(i + 1).copied())
    };
    assert!(args.contains(&"serve"));
    assert_eq!(after("--config"), Some("/etc/tongbao/hub.toml"));
    assert_eq!(after("--data-dir"), Some("/var/lib/tongbao"));
    assert_eq!(after("--log-format"), Some("json"));
    assert_eq!(
        unit_values(&unit, "ConditionPathExists"),
        ["/etc/tongbao/hub.toml"],
        "the hub must wait for the config it reads"
    );
    assert_eq!(unit_values(&unit, "User"), ["tongbao"]);
    assert_eq!(unit_values(&unit, "ReadWritePaths"), ["/var/lib/tongbao"]);
    for (key, value) in [
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("Restart", "on-failure"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
    ] {
        assert_eq!(unit_values(&unit, key), [value], "{key}");
    }
    let nofile: u64 = unit_values(&unit, "LimitNOFILE")
        .first()
        .ok_or("no LimitNOFILE")?
        .parse()?;
    let connections = HubConfig::load(&repo().join("packaging/hub.toml.example"))?
        .connections
        .max_connections as u64;
    assert!(
        nofile > connections,
        "LimitNOFILE {nofile} ≤ {connections} connections"
    );
    Ok(())
}

#[test]
fn the_package_installs_what_the_unit_runs_and_creates_its_user() -> TestResult {
    let manifest: toml::Value = toml::from_str(&read("server/Cargo.toml")?)?;
    let deb = manifest
        .get("package")
        .and_then(|p| p.get("metadata"))
        .and_then(|m| m.get("deb"))
        .ok_or("no [package.metadata.deb]")?;
    let assets = deb
        .get("assets")
        .and_then(|a| a.as_array())
        .ok_or("no assets")?;
    let installs = |source: &str, target: &str| {
        assets.iter().any(|a| {
            a.get(0).and_then(|v| v.as_str()) == Some(source)
                && a.get(1).and_then(|v| v.as_str()) == Some(target)
        })
    };
    assert!(installs("target/release/tongbao-hub", "usr/bin/"));
    assert!(installs("target/release/tongbao", "usr/bin/"));
    let units = deb.get("systemd-units").ok_or("no systemd-units")?;
    assert_eq!(
        units.get("unit-name").and_then(|v| v.as_str()),
        Some("tongbao-hub")
    );
    assert_eq!(
        units.get("start").and_then(|v| v.as_bool()),
        Some(false),
        "the package must not start an unconfigured hub"
    );
    let unit_dir = units
        .get("unit-scripts")
        .and_then(|v| v.as_str())
        .ok_or("no unit-scripts")?;
    assert!(
        repo()
            .join("server")
            .join(unit_dir)
            .join("tongbao-hub.service")
            .is_file()
    );
    let postinst = read("packaging/debian/postinst")?;
    assert!(postinst.contains("#DEBHELPER#"));
    for needed in [
        "adduser --system --group --home /var/lib/tongbao",
        "install -d -m 0700 /var/lib/tongbao",
        "chown tongbao:tongbao /var/lib/tongbao",
        "install -d -m 0750 -o root -g tongbao /etc/tongbao",
    ] {
        assert!(postinst.contains(needed), "postinst lacks {needed}");
    }
    // Purging never deletes the data.
    let postrm = read("packaging/debian/postrm")?;
    assert!(!postrm.contains("rm -"), "postrm removes files");
    Ok(())
}
