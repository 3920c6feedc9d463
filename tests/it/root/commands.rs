//! SPEC §1 and §2: commands run in order and the first failure stops the run; bldr's
//! exit code and the report's outcome and command statuses agree.

use super::harness::{Fixture, Outer};

#[test]
fn a_failing_command_stops_the_run_with_exit_1_and_later_commands_do_not_run() {
    require_root!();
    let fx = Fixture::new();
    let profile = fx
        .profile("fails")
        .command("touch /mnt/sync/first-ran")
        .command("echo failing; exit 7")
        .command("touch /mnt/sync/third-ran")
        .write();
    let done = fx.run(&profile, &Outer::default());
    done.assert_outcome(1, "command-failed");
    assert!(fx.sync.join("first-ran").exists(), "{}", done.context());
    assert!(
        !fx.sync.join("third-ran").exists(),
        "a command after the failure ran\n{}",
        done.context()
    );
    assert_eq!(done.command_statuses(), ["success", "failed", "not-run"]);
    let cmds = &done.report()["commands"];
    assert_eq!(cmds[1]["exit_code"], 7, "{}", done.context());
    assert!(cmds[2]["exit_code"].is_null());
}

#[test]
fn exit_codes_and_outcomes_in_the_report_match_how_the_run_ended() {
    require_root!();
    struct Case {
        name: &'static str,
        commands: &'static [&'static str],
        timeout: Option<&'static str>,
        code: i32,
        outcome: &'static str,
        statuses: &'static [&'static str],
    }
    let cases = [
        Case {
            name: "all succeed",
            commands: &["true", "echo two"],
            timeout: None,
            code: 0,
            outcome: "success",
            statuses: &["success", "success"],
        },
        Case {
            name: "killed by a signal",
            commands: &["kill -9 $$", "true"],
            timeout: None,
            code: 1,
            outcome: "command-failed",
            statuses: &["failed", "not-run"],
        },
        Case {
            name: "runs out of time",
            commands: &["sleep 30", "true"],
            timeout: Some("1s"),
            code: 124,
            outcome: "timeout",
            statuses: &["timeout", "not-run"],
        },
    ];
    let handles: Vec<_> = cases
        .into_iter()
        .map(|case| {
            std::thread::spawn(move || {
                let fx = Fixture::new();
                let mut p = fx.profile("codes");
                for (i, c) in case.commands.iter().enumerate() {
                    p = match (i, case.timeout) {
                        (0, Some(t)) => p.command_with(c, &format!("timeout: {t}")),
                        _ => p.command(c),
                    };
                }
                let done = fx.run(&p.write(), &Outer::default());
                done.assert_outcome(case.code, case.outcome);
                assert_eq!(
                    done.command_statuses(),
                    case.statuses,
                    "{}: {}",
                    case.name,
                    done.context()
                );
                if case.name == "killed by a signal" {
                    assert_eq!(
                        done.report()["commands"][0]["signal"],
                        9,
                        "{}",
                        done.context()
                    );
                }
                done.assert_outer_unchanged();
            })
        })
        .collect();
    for h in handles {
        if let Err(p) = h.join() {
            std::panic::resume_unwind(p);
        }
    }
}
