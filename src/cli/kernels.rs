//! `sockmatrix kernels`: what the catalogue holds, fetching, refreshing the lock.

use std::process::ExitCode;

use clap::Subcommand;

use super::exit;
use crate::kernel;
use crate::runner;

#[derive(Subcommand)]
pub enum Action {
    /// Every kernel in the catalogue: source, pinned version, cached or not; the
    /// cache's size against its cap. With --releases, every release of a series.
    List {
        /// A series (`6.1`, `6.12`, `mainline`) or `all`: every release the
        /// mirror's indexes offer, oldest first.
        #[arg(long, value_name = "SERIES")]
        releases: Option<String>,
        /// Read the mirror's indexes again instead of the list cached for six hours.
        #[arg(long, requires = "releases")]
        refresh: bool,
    },
    /// Remove the least recently used kernels (and their packages) from the cache
    /// until it is under the cap (`$SOCKMATRIX_CACHE_MAX`, default 6G) or --max-size.
    Prune {
        /// Size to prune down to, e.g. 800M or 2G; 0 removes every kernel not used
        /// in the last fifteen minutes.
        #[arg(long)]
        max_size: Option<String>,
    },
    /// Download, verify and unpack kernels into the cache (default: the default set).
    Fetch { ids: Vec<String> },
    /// Build a kernel from source (a tree, a tarball or URL, Debian's linux-source-X.Y,
    /// or a catalogue `source_build` id), cached by its inputs; prints the vmlinuz path.
    /// Exit 2: bad source or config (options the guest needs did not survive);
    /// 3: the build failed (the log's tail is shown).
    Build(BuildArgs),
    /// Re-read the Debian indexes and pin the newest matching packages in vm/kernels.lock.
    Lock {
        /// Required: rewriting the lock changes what every run boots.
        #[arg(long)]
        refresh: bool,
    },
}

#[derive(clap::Args)]
pub struct BuildArgs {
    /// A catalogue `source_build` kernel (3.9, 4.13): its tarball URL (or --source),
    /// compiler and machine, defconfig plus its fragment, named by its id.
    #[arg(conflicts_with = "debian")]
    pub id: Option<String>,
    /// A kernel tree (git checkout or unpacked tarball), a .tar.xz/.tar.gz, or a URL.
    #[arg(long, value_name = "DIR|TARBALL|URL")]
    pub source: Option<String>,
    /// Debian's source package from the catalogue's mirror suites, e.g.
    /// `linux-source-6.1` or `linux-source-6.1=6.1.192-2`.
    #[arg(long, value_name = "PACKAGE[=VERSION]", conflicts_with = "source")]
    pub debian: Option<String>,
    /// `minimal` (tinyconfig), `defconfig` (x86_64_defconfig) or a .config file; the
    /// guest fragment is merged over it.
    #[arg(long, default_value = "minimal")]
    pub config: String,
    /// The guest fragment (default: the catalogue's config/sockmatrix-guest.config).
    #[arg(long)]
    pub fragment: Option<std::path::PathBuf>,
    /// The id `run --kernel` knows it by (default built-<version>-<config>-<key>).
    #[arg(long)]
    pub name: Option<String>,
    /// The compiler (old kernels need an old gcc, see vm/README.md).
    #[arg(long)]
    pub cc: Option<String>,
    /// Do not compile through ccache even when it is installed.
    #[arg(long)]
    pub no_ccache: bool,
    /// Parallel jobs (default: the cores).
    #[arg(long, short)]
    pub jobs: Option<usize>,
    /// The QEMU machine this kernel needs, recorded with it (microvm or pc).
    #[arg(long)]
    pub machine: Option<crate::qemu::Machine>,
    /// Only fetch and unpack the source; print the tree's folder, build nothing.
    #[arg(long)]
    pub only_source: bool,
}

pub fn kernels(action: Action) -> ExitCode {
    let (catalogue, lock) = match runner::load_catalogue() {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(exit::BAD_INPUT);
        }
    };
    let cache = kernel::cache_dir();
    match action {
        Action::List {
            releases: Some(series),
            refresh,
        } => list_releases(&catalogue, &lock, &series, refresh),
        Action::Prune { max_size } => prune(&cache, max_size.as_deref()),
        Action::Build(args) => super::kernels_build::build(&args, &catalogue, &cache),
        Action::List { releases: None, .. } => {
            println!("{}", super::doctor::accel_line());
            println!(
                "{:<6} {:<13} {:<8} {:<7} pinned",
                "id", "source", "default", "cached"
            );
            for k in kernel::list(&catalogue, &lock, &cache) {
                let pinned = match (&k.pinned_package, &k.pinned_version) {
                    (Some(p), Some(v)) => format!("{p} {v}"),
                    _ => "-".to_string(),
                };
                let yes = |b: bool| if b { "yes" } else { "no" };
                println!(
                    "{:<6} {:<13} {:<8} {:<7} {pinned}",
                    k.id,
                    k.kind,
                    yes(k.default),
                    yes(k.cached)
                );
            }
            super::kernels_build::list_built(&cache);
            print_cache_size(&cache);
            ExitCode::SUCCESS
        }
        Action::Fetch { ids } => {
            let ids = if ids.is_empty() {
                catalogue.default_ids()
            } else {
                ids
            };
            let mut failed = false;
            for id in &ids {
                match runner::provision(id, &catalogue, &lock, true) {
                    Ok(image) => println!("{id}: {}", image.vmlinuz.display()),
                    Err(e) => {
                        eprintln!("{id}: {e:#}");
                        failed = true;
                    }
                }
            }
            if failed {
                ExitCode::from(exit::COULD_NOT_RUN)
            } else {
                ExitCode::SUCCESS
            }
        }
        Action::Lock { refresh } => {
            if !refresh {
                eprintln!("error: `kernels lock --refresh` rewrites vm/kernels.lock; say --refresh to do it");
                return ExitCode::from(exit::BAD_INPUT);
            }
            let path = match runner::chosen_catalogue_dir() {
                Ok(Some(dir)) => dir.join("kernels.lock"),
                Ok(None) => {
                    eprintln!("error: the built-in catalogue cannot be rewritten; run this in a sockmatrix checkout (./vm) or give --catalogue DIR");
                    return ExitCode::from(exit::BAD_INPUT);
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    return ExitCode::from(exit::BAD_INPUT);
                }
            };
            match kernel::refresh_lock(&catalogue, &cache)
                .and_then(|new| new.save(&path).map(|()| new))
            {
                Ok(new) => {
                    for (id, k) in &new.kernels {
                        println!("{id}: {} {}", k.package, k.version);
                    }
                    println!("wrote {}", path.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(exit::COULD_NOT_RUN)
                }
            }
        }
    }
}

fn print_cache_size(cache: &std::path::Path) {
    let entries = kernel::prune::entries(cache);
    let cap = match kernel::prune::cap() {
        Ok(cap) => kernel::prune::human(cap),
        Err(e) => format!("unset ({e:#})"),
    };
    println!(
        "cache: {} ({} in {} kernels and packages; cap {cap}, least recently used pruned first)",
        cache.display(),
        kernel::prune::human(kernel::prune::total(&entries)),
        entries.len()
    );
}

fn list_releases(
    catalogue: &kernel::Catalogue,
    lock: &kernel::Lock,
    series: &str,
    refresh: bool,
) -> ExitCode {
    let (index, releases) = match super::series_releases(catalogue, series, refresh) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let cache = kernel::cache_dir();
    let rows: Vec<[String; 7]> = releases
        .iter()
        .map(|r| {
            let pinned = lock.releases.get(&r.label) == Some(&r.pin);
            let cached = kernel::is_cached(&cache, &r.label, &r.pin.version);
            let yes = |b: bool| if b { "yes" } else { "no" }.to_string();
            [
                r.label.clone(),
                r.upstream.clone(),
                r.pin.version.clone(),
                r.abi.clone(),
                r.pin.package.clone(),
                format!("{}/{}", yes(pinned), yes(cached)),
                r.suites.join(" "),
            ]
        })
        .collect();
    let head = [
        "release",
        "upstream",
        "debian version",
        "abi",
        "package",
        "pin/cache",
        "suites",
    ];
    let mut w = head.map(str::len);
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            w[i] = w[i].max(cell.len());
        }
    }
    let line = |cells: [&str; 7]| {
        let mut out = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<width$}  ", width = w[i]));
            }
        }
        out
    };
    println!("{}", line(head));
    for row in &rows {
        println!("{}", line(row.each_ref().map(String::as_str)));
    }
    let age = crate::resultset::results::now().saturating_sub(index.fetched_at);
    println!(
        "{} release(s) of {series}; series: {}; indexes read {} min ago",
        rows.len(),
        index.series_names().join(", "),
        age / 60
    );
    ExitCode::SUCCESS
}

fn prune(cache: &std::path::Path, max_size: Option<&str>) -> ExitCode {
    let cap = match max_size
        .map(kernel::prune::parse_size)
        .unwrap_or_else(kernel::prune::cap)
    {
        Ok(cap) => cap,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(exit::BAD_INPUT);
        }
    };
    match kernel::prune::prune(cache, cap) {
        Ok(removed) => {
            for e in &removed {
                println!("removed {} ({})", e.name, kernel::prune::human(e.bytes));
            }
            println!(
                "pruned {} entr{}, {}",
                removed.len(),
                if removed.len() == 1 { "y" } else { "ies" },
                kernel::prune::human(removed.iter().map(|e| e.bytes).sum())
            );
            print_cache_size(cache);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::COULD_NOT_RUN)
        }
    }
}
