//! The daemon plays and records under the hardening of `dist/soundgated.service`.
//!
//! PID 1 here is not systemd, so `systemd-run --property=...` cannot run. The test applies
//! what the unit asks for itself, between fork and exec of `soundgated`:
//! - `User=`/`Group=`/`SupplementaryGroups=audio`: an unprivileged uid (nobody) and gid;
//! - `LimitRTPRIO=`/`LimitRTTIME=`: the same rlimits, read from the unit;
//! - `CapabilityBoundingSet=` (empty): every capability dropped from the bounding set;
//! - `NoNewPrivileges=yes`: `PR_SET_NO_NEW_PRIVS`;
//! - `SystemCallFilter=@system-service`: a seccomp allow-list of exactly the syscalls that
//!   `systemd-analyze syscall-filter` lists for the group (its nested groups expanded), any
//!   other syscall killing the process, as systemd's default does;
//! - `SystemCallArchitectures=native`: other ABIs (x32, i386) are killed;
//! - `RestrictAddressFamilies=AF_UNIX AF_NETLINK`: `socket()` of any other family fails with
//!   `EAFNOSUPPORT`, which is how systemd implements it;
//! - `MemoryDenyWriteExecute=yes`: `mmap` with `PROT_WRITE|PROT_EXEC` and `mprotect` /
//!   `pkey_mprotect` adding `PROT_EXEC` fail with `EPERM`, as in systemd.
//!
//! The mount-namespace options (`ProtectSystem=`, `ProtectHome=`, `PrivateTmp=`,
//! `PrivateNetwork=`, `DevicePolicy=`) are not reproduced here; they only hide paths the
//! daemon does not use, and `systemd-analyze verify` checks their syntax (tests/systemd.rs).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
#![cfg(target_arch = "x86_64")]

mod common;

use common::{bin, dominant_frequency, read_wav, sine, tone, wait_for, write_wav};
use soundgate_proto::client::Client;
use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const NOBODY: u32 = 65534;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn unit_value(key: &str) -> String {
    let unit = std::fs::read_to_string(root().join("dist/soundgated.service")).unwrap();
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .next_back()
        .unwrap_or_else(|| panic!("the unit has no {key}="))
        .to_string()
}

/// "200ms" / "2s" / "20" (µs) → µs.
fn usec(v: &str) -> u64 {
    if let Some(ms) = v.strip_suffix("ms") {
        ms.parse::<u64>().unwrap() * 1000
    } else if let Some(s) = v.strip_suffix('s') {
        s.parse::<u64>().unwrap() * 1_000_000
    } else {
        v.parse().unwrap()
    }
}

/// Syscall names in a systemd filter group, nested groups expanded, from systemd itself.
fn syscall_group(group: &str) -> Option<BTreeSet<String>> {
    let out = Command::new("systemd-analyze")
        .arg("syscall-filter")
        .output()
        .ok()?;
    let text = String::from_utf8(out.stdout).unwrap();
    let mut groups: HashMap<String, Vec<String>> = HashMap::new();
    let mut current = None;
    for line in text.lines() {
        let item = line.trim();
        if item.is_empty() || item.starts_with('#') {
            continue;
        }
        if line.starts_with('@') {
            current = Some(item.to_string());
            groups.entry(item.to_string()).or_default();
        } else if let Some(g) = &current {
            groups.get_mut(g).unwrap().push(item.to_string());
        }
    }
    fn expand(g: &str, groups: &HashMap<String, Vec<String>>, out: &mut BTreeSet<String>) {
        for item in groups.get(g).into_iter().flatten() {
            if item.starts_with('@') {
                expand(item, groups, out);
            } else {
                out.insert(item.clone());
            }
        }
    }
    let mut out = BTreeSet::new();
    expand(group, &groups, &mut out);
    (!out.is_empty()).then_some(out)
}

/// x86_64 syscall numbers from the kernel headers (linux-libc-dev, pulled in by
/// libasound2-dev).
fn syscall_numbers() -> HashMap<String, u32> {
    let header = [
        "/usr/include/x86_64-linux-gnu/asm/unistd_64.h",
        "/usr/include/asm/unistd_64.h",
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok())
    .expect("asm/unistd_64.h (linux-libc-dev)");
    header
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("#define __NR_")?;
            let (name, nr) = rest.split_once(' ')?;
            Some((name.to_string(), nr.trim().parse().ok()?))
        })
        .collect()
}

// Classic BPF and seccomp constants (linux/filter.h, linux/seccomp.h, linux/audit.h).
// BPF_LD | BPF_W | BPF_ABS (the first two are 0).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JEQ_K: u16 = 0x05 | 0x10;
const BPF_JGE_K: u16 = 0x05 | 0x30;
const BPF_AND_K: u16 = 0x04 | 0x50;
const BPF_RET_K: u16 = 0x06;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
// Offsets in struct seccomp_data: nr, arch, instruction_pointer, args[6] (u64, little endian).
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const fn off_arg(i: u32) -> u32 {
    16 + 8 * i
}

fn ins(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The seccomp program equivalent to the unit's syscall, architecture, address family and
/// W^X settings.
fn filter(allowed: &BTreeSet<String>) -> Vec<libc::sock_filter> {
    let nr = syscall_numbers();
    let n = |name: &str| nr[name];
    let mut f = vec![
        // SystemCallArchitectures=native.
        ins(BPF_LD_W_ABS, 0, 0, OFF_ARCH),
        ins(BPF_JEQ_K, 1, 0, AUDIT_ARCH_X86_64),
        ins(BPF_RET_K, 0, 0, RET_KILL_PROCESS),
        ins(BPF_LD_W_ABS, 0, 0, OFF_NR),
        ins(BPF_JGE_K, 0, 1, X32_SYSCALL_BIT),
        ins(BPF_RET_K, 0, 0, RET_KILL_PROCESS),
        // RestrictAddressFamilies=AF_UNIX AF_NETLINK.
        ins(BPF_JEQ_K, 0, 5, n("socket")),
        ins(BPF_LD_W_ABS, 0, 0, off_arg(0)),
        ins(BPF_JEQ_K, 1, 0, libc::AF_UNIX as u32),
        ins(BPF_JEQ_K, 0, 1, libc::AF_NETLINK as u32),
        ins(BPF_RET_K, 0, 0, RET_ALLOW),
        ins(BPF_RET_K, 0, 0, RET_ERRNO | libc::EAFNOSUPPORT as u32),
        // MemoryDenyWriteExecute=yes: no writable+executable mapping...
        ins(BPF_JEQ_K, 0, 5, n("mmap")),
        ins(BPF_LD_W_ABS, 0, 0, off_arg(2)),
        ins(BPF_AND_K, 0, 0, (libc::PROT_WRITE | libc::PROT_EXEC) as u32),
        ins(BPF_JEQ_K, 0, 1, (libc::PROT_WRITE | libc::PROT_EXEC) as u32),
        ins(BPF_RET_K, 0, 0, RET_ERRNO | libc::EPERM as u32),
        ins(BPF_RET_K, 0, 0, RET_ALLOW),
        // ... and no mapping made executable later.
        ins(BPF_JEQ_K, 1, 0, n("mprotect")),
        ins(BPF_JEQ_K, 0, 5, n("pkey_mprotect")),
        ins(BPF_LD_W_ABS, 0, 0, off_arg(2)),
        ins(BPF_AND_K, 0, 0, libc::PROT_EXEC as u32),
        ins(BPF_JEQ_K, 0, 1, libc::PROT_EXEC as u32),
        ins(BPF_RET_K, 0, 0, RET_ERRNO | libc::EPERM as u32),
        ins(BPF_RET_K, 0, 0, RET_ALLOW),
    ];
    // The accumulator holds the syscall number at every test below (the branches above
    // reload it only on paths that return).
    let mut listed = 0;
    for name in allowed {
        if let Some(&k) = nr.get(name) {
            f.push(ins(BPF_JEQ_K, 0, 1, k));
            f.push(ins(BPF_RET_K, 0, 0, RET_ALLOW));
            listed += 1;
        }
    }
    assert!(listed > 250, "only {listed} syscalls of @system-service");
    f.push(ins(BPF_RET_K, 0, 0, RET_KILL_PROCESS));
    f
}

/// Makes `cmd` exec under the unit's credentials, limits and filter.
fn harden(cmd: &mut Command, program: Vec<libc::sock_filter>) {
    let rtprio: u64 = unit_value("LimitRTPRIO").parse().unwrap();
    let rttime = unit_value("LimitRTTIME");
    let (soft, hard) = rttime.split_once(':').unwrap();
    let (rt_soft, rt_hard) = (usec(soft), usec(hard));
    let last_cap: i32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Groups missing on this machine are skipped, as systemd would refuse to start instead.
    let groups: Vec<libc::gid_t> = unit_value("SupplementaryGroups")
        .split_whitespace()
        .filter_map(|g| nix::unistd::Group::from_name(g).unwrap())
        .map(|g| g.gid.as_raw())
        .collect();
    // Raising RLIMIT_RTPRIO above its hard limit needs CAP_SYS_RESOURCE, which a container
    // may lack (systemd has it); then the daemon keeps the inherited limit.
    let hard_rtprio = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_RTPRIO)
        .unwrap()
        .1;
    let set_rtprio = hard_rtprio >= rtprio || has_capability(24 /* CAP_SYS_RESOURCE */);
    if !set_rtprio {
        eprintln!("note: no CAP_SYS_RESOURCE here, so LimitRTPRIO={rtprio} cannot be applied");
    }
    let hook = move || -> std::io::Result<()> {
        let fail = || Err(std::io::Error::last_os_error());
        let prog = libc::sock_fprog {
            len: program.len() as u16,
            filter: program.as_ptr() as *mut libc::sock_filter,
        };
        let prio = libc::rlimit {
            rlim_cur: rtprio,
            rlim_max: rtprio,
        };
        let time = libc::rlimit {
            rlim_cur: rt_soft,
            rlim_max: rt_hard,
        };
        // SAFETY: between fork and exec only async-signal-safe system calls run here, on
        // values prepared before the fork (no allocation); each pointer is to a live local.
        unsafe {
            if (set_rtprio && libc::setrlimit(libc::RLIMIT_RTPRIO, &prio) != 0)
                || libc::setrlimit(libc::RLIMIT_RTTIME, &time) != 0
            {
                return fail();
            }
            for cap in 0..=last_cap {
                if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 {
                    return fail();
                }
            }
            if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                || libc::setresgid(NOBODY, NOBODY, NOBODY) != 0
                || libc::setresuid(NOBODY, NOBODY, NOBODY) != 0
                || libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
                || libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &prog as *const libc::sock_fprog,
                ) != 0
            {
                return fail();
            }
        }
        Ok(())
    };
    // SAFETY: the hook only makes async-signal-safe system calls (see above).
    unsafe { cmd.pre_exec(hook) };
}

/// Whether this process has capability `cap` in its effective set.
fn has_capability(cap: u32) -> bool {
    let eff = status_field(std::process::id(), "CapEff");
    u64::from_str_radix(&eff, 16).unwrap() & (1 << cap) != 0
}

fn status_field(pid: u32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

#[test]
fn the_daemon_plays_and_records_under_the_units_hardening() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: dropping to another uid needs root");
        return;
    }
    assert_eq!(unit_value("SystemCallFilter"), "@system-service");
    assert_eq!(unit_value("NoNewPrivileges"), "yes");
    assert_eq!(unit_value("CapabilityBoundingSet"), "");
    assert_eq!(unit_value("RestrictAddressFamilies"), "AF_UNIX AF_NETLINK");
    assert_eq!(unit_value("MemoryDenyWriteExecute"), "yes");
    let Some(allowed) = syscall_group("@system-service") else {
        eprintln!("SKIPPED: systemd-analyze is not installed (.ci/run installs systemd)");
        return;
    };
    let program = filter(&allowed);

    // The filter is real: a forbidden syscall (chroot is outside @system-service) kills.
    let mut probe = Command::new("chroot");
    probe.arg("/").arg("true").stderr(Stdio::null());
    harden(&mut probe, program.clone());
    let status = probe.status().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGSYS), "{status:?}");

    // Directories the unprivileged daemon owns, as systemd's *Directory= would make them.
    let tmp = tempfile::Builder::new()
        .prefix("sg-hard-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = tmp.path().join("d");
    let (runtime, state) = (d.join("run"), d.join("state"));
    for dir in [&d, &runtime, &state] {
        std::fs::create_dir_all(dir).unwrap();
        nix::unistd::chown(dir.as_path(), Some(NOBODY.into()), Some(NOBODY.into())).unwrap();
    }
    let config = d.join("soundgate.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[engine]
realtime_priority = {prio}

[[sink]]
name = "out"
backend = "file"
path = "{mix}"
rate = 48000
channels = 2
format = "f32le"
quantum = 256

[[rule]]
uid = 0
action = "record"
target = "out.monitor"
decision = "allow"
"#,
            prio = unit_value("LimitRTPRIO"),
            mix = d.join("mix.wav").display()
        ),
    )
    .unwrap();
    let log = tmp.path().join("daemon.log");
    let mut cmd = Command::new(bin("soundgated"));
    cmd.arg("--config")
        .arg(&config)
        .arg("--runtime-dir")
        .arg(&runtime)
        .arg("--state-dir")
        .arg(&state)
        .arg("-v")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    harden(&mut cmd, program);
    let mut child = cmd.spawn().unwrap();
    let daemon_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let socket = runtime.join("native");
    let up = wait_for(Duration::from_secs(20), || {
        matches!(child.try_wait(), Ok(Some(_))) || Client::connect(&socket, "probe").is_ok()
    });
    assert!(
        up && matches!(child.try_wait(), Ok(None)),
        "{}",
        daemon_log()
    );

    // It runs as the unit says.
    let pid = child.id();
    assert!(status_field(pid, "Uid").starts_with(&format!("{NOBODY}\t")));
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    assert_eq!(status_field(pid, "Seccomp"), "2");
    assert_eq!(status_field(pid, "CapBnd"), "0000000000000000");
    assert_eq!(status_field(pid, "CapEff"), "0000000000000000");

    // Play a tone while recording the monitor, both with the real sgcat (as root).
    let (tone_path, rec) = (tmp.path().join("tone.wav"), tmp.path().join("rec.wav"));
    write_wav(
        &tone_path,
        48_000,
        2,
        &sine(440.0, 48_000, 48_000, 0.5, 2),
        true,
    );
    let sgcat = || {
        let mut c = Command::new(bin("sgcat"));
        c.arg("--server").arg(&socket);
        c
    };
    let recorder = sgcat()
        .args(["-r", "--device", "out.monitor", "--duration", "2"])
        .arg(&rec)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || daemon_log()
            .contains("record stream created")),
        "{}",
        daemon_log()
    );
    let out = sgcat().arg("-p").arg(&tone_path).output().unwrap();
    assert!(
        out.status.success(),
        "sgcat -p: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        daemon_log()
    );
    let out = recorder.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "sgcat -r: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        daemon_log()
    );

    // Still alive (a filtered syscall would have killed it with SIGSYS), then a clean stop.
    assert!(matches!(child.try_wait(), Ok(None)), "{}", daemon_log());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(wait_for(Duration::from_secs(15), || matches!(
        child.try_wait(),
        Ok(Some(_))
    )));
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}\n{}", daemon_log());
    let text = daemon_log();
    // The rlimits from the unit let the unprivileged engine have SCHED_FIFO (where the kernel
    // allows real-time scheduling at all).
    if text.contains("SCHED_FIFO not permitted") {
        eprintln!("note: the kernel refused SCHED_FIFO even within RLIMIT_RTPRIO:\n{text}");
    } else {
        assert!(
            text.contains("engine runs with SCHED_FIFO; RLIMIT_RTTIME 200 ms"),
            "{text}"
        );
    }

    for (what, path) in [("recording", rec), ("sink file", d.join("mix.wav"))] {
        let (spec, samples) = read_wav(&path);
        assert_eq!(spec.channels, 2, "{what}");
        let left = common::channel(&samples, 2, 0);
        let start = common::onset(&left, 0.01).unwrap_or_else(|| panic!("{what} is silent"));
        let body = &left[start..];
        assert!(body.len() > 24_000, "{what}: {} frames", body.len());
        let body = &body[2_400..24_000];
        let f = dominant_frequency(body, 48_000, 300.0, 600.0);
        assert!((f - 440.0).abs() < 1.0, "{what}: {f} Hz");
        let (amp, _) = tone(body, 440.0, 48_000);
        assert!((amp - 0.5).abs() < 0.01, "{what}: level {amp}");
    }
}
