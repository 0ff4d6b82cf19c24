//! `initialize`: give the node the addresses pods call the agent on, as the official agent's
//! privileged init container does, through netlink (no `ip` binary in the image).
//!
//! Creates the link `pod-id-link0` if absent, adds `169.254.170.23/32` and `fd00:ec2::23/128`,
//! brings it up and adds the two routes to the main table. Idempotent: whatever already exists
//! is left as it is, so a second run changes nothing and succeeds. IPv4 failures are errors;
//! IPv6 failures are warnings, as on IPv4-only nodes.
//!
//! The link is a dummy link where the kernel has them. Some kernels are built without
//! `CONFIG_DUMMY` (our CI's among them); there `--link-kind auto` falls back to a veth pair whose
//! peer (`<name>p`) is only brought up, never addressed: the addresses are local either way, and
//! nothing is reachable from outside the node through it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use pod_identity_contracts::constants::{AGENT_IPV4, AGENT_IPV6};
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressHeaderFlags};
use rtnetlink::packet_route::link::LinkMessage;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteScope};
use rtnetlink::{Handle, LinkDummy, LinkUnspec, LinkVeth, RouteMessageBuilder};

/// What kind of link holds the addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LinkKind {
    /// A dummy link; a veth pair where the kernel has no dummy links.
    Auto,
    /// A dummy link, or fail.
    Dummy,
    /// A veth pair.
    Veth,
    /// An existing link the operator made; fail if absent.
    Existing,
}

/// Why `initialize` failed. Each names the link or address involved.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(
        "cannot open a netlink socket: {0} (initialize needs CAP_NET_ADMIN: run it privileged)"
    )]
    Connect(#[source] std::io::Error),
    #[error("link {name}: {action}: {source}")]
    Link {
        name: String,
        action: &'static str,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("link {0} does not exist (--link-kind existing)")]
    Missing(String),
    #[error(
        "this kernel has no dummy links (CONFIG_DUMMY is off); use --link-kind auto or veth, or create the link yourself and pass --link-kind existing"
    )]
    NoDummy,
    #[error("address {addr} on {name}: {source}")]
    Address {
        name: String,
        addr: IpAddr,
        #[source]
        source: rtnetlink::Error,
    },
    #[error(
        "expected route {dst} to be interface index {want} but is {got}, please remove route and try again"
    )]
    RouteElsewhere { dst: IpAddr, want: u32, got: u32 },
    #[error("route {dst} via {name}: {source}")]
    Route {
        name: String,
        dst: IpAddr,
        #[source]
        source: rtnetlink::Error,
    },
}

/// What a run did, for the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitReport {
    /// `dummy`, `veth`, or `existing` when the link was already there.
    pub link: &'static str,
    pub changes: Vec<String>,
    pub warnings: Vec<String>,
}

const ENODEV: i32 = 19;
const RT_TABLE_MAIN: u32 = 254;
const EEXIST: i32 = 17;
const EOPNOTSUPP: i32 = 95;

fn errno(err: &rtnetlink::Error) -> Option<i32> {
    match err {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| -c.get()),
        _ => None,
    }
}

/// Make the node ready for the agent. See the module doc.
pub async fn initialize(link_name: &str, kind: LinkKind) -> Result<InitReport, InitError> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(InitError::Connect)?;
    let driver = tokio::spawn(connection);
    let result = run(&handle, link_name, kind).await;
    driver.abort();
    result
}

async fn run(handle: &Handle, name: &str, kind: LinkKind) -> Result<InitReport, InitError> {
    let mut report = InitReport::default();
    let index = match find_link(handle, name).await? {
        Some(index) => {
            report.link = "existing";
            index
        }
        None => {
            report.link = create_link(handle, name, kind).await?;
            report
                .changes
                .push(format!("created {} link {name}", report.link));
            find_link(handle, name)
                .await?
                .ok_or_else(|| InitError::Missing(name.to_string()))?
        }
    };
    set_up(handle, name, index).await?;
    if report.link == "veth" {
        // The peer carries nothing; up only so the link has carrier.
        let peer = peer_name(name);
        if let Some(peer_index) = find_link(handle, &peer).await? {
            set_up(handle, &peer, peer_index).await?;
        }
    }

    let v4: Ipv4Addr = AGENT_IPV4.parse().expect("constant");
    let v6: Ipv6Addr = AGENT_IPV6.parse().expect("constant");
    configure_family(handle, name, index, IpAddr::V4(v4), 32, &mut report).await?;
    if let Err(e) = configure_family(handle, name, index, IpAddr::V6(v6), 128, &mut report).await {
        report.warnings.push(format!(
            "IPv6 not configured (the agent will serve IPv4 only): {e}"
        ));
    }
    Ok(report)
}

async fn configure_family(
    handle: &Handle,
    name: &str,
    index: u32,
    addr: IpAddr,
    prefix: u8,
    report: &mut InitReport,
) -> Result<(), InitError> {
    if !has_address(handle, index, addr).await? {
        let mut req = handle.address().add(index, addr, prefix);
        if addr.is_ipv6() {
            // No duplicate address detection: the address is node-local, and DAD would leave it
            // "tentative" (unbindable) for the first second or two after boot.
            let msg = req.message_mut();
            msg.header.flags |= AddressHeaderFlags::Nodad;
            msg.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        match req.execute().await {
            Ok(()) => report
                .changes
                .push(format!("added {addr}/{prefix} to {name}")),
            Err(e) if errno(&e) == Some(EEXIST) => {}
            Err(source) => {
                return Err(InitError::Address {
                    name: name.to_string(),
                    addr,
                    source,
                });
            }
        }
    }
    match route_oif(handle, addr).await? {
        Some(oif) if oif == index => {}
        Some(got) => {
            return Err(InitError::RouteElsewhere {
                dst: addr,
                want: index,
                got,
            });
        }
        None => {
            let msg = match addr {
                IpAddr::V4(v4) => RouteMessageBuilder::<Ipv4Addr>::new()
                    .destination_prefix(v4, prefix)
                    .output_interface(index)
                    .scope(RouteScope::Link)
                    .build(),
                IpAddr::V6(v6) => RouteMessageBuilder::<Ipv6Addr>::new()
                    .destination_prefix(v6, prefix)
                    .output_interface(index)
                    .build(),
            };
            match handle.route().add(msg).execute().await {
                Ok(()) => report
                    .changes
                    .push(format!("added route {addr}/{prefix} dev {name}")),
                Err(e) if errno(&e) == Some(EEXIST) => {}
                Err(source) => {
                    return Err(InitError::Route {
                        name: name.to_string(),
                        dst: addr,
                        source,
                    });
                }
            }
        }
    }
    Ok(())
}

fn peer_name(name: &str) -> String {
    // Interface names are at most 15 bytes.
    let mut peer: String = name.chars().take(14).collect();
    peer.push('p');
    peer
}

async fn find_link(handle: &Handle, name: &str) -> Result<Option<u32>, InitError> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(Some(LinkMessage { header, .. })) => Ok(Some(header.index)),
        Ok(None) => Ok(None),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
        Err(source) => Err(InitError::Link {
            name: name.to_string(),
            action: "look up",
            source,
        }),
    }
}

async fn create_link(
    handle: &Handle,
    name: &str,
    kind: LinkKind,
) -> Result<&'static str, InitError> {
    let create_dummy = || async {
        handle
            .link()
            .add(LinkDummy::new(name).build())
            .execute()
            .await
    };
    let create_veth = || async {
        handle
            .link()
            .add(LinkVeth::new(name, &peer_name(name)).build())
            .execute()
            .await
            .map_err(|source| InitError::Link {
                name: name.to_string(),
                action: "create veth pair",
                source,
            })
    };
    match kind {
        LinkKind::Existing => Err(InitError::Missing(name.to_string())),
        LinkKind::Veth => create_veth().await.map(|()| "veth"),
        LinkKind::Dummy | LinkKind::Auto => match create_dummy().await {
            Ok(()) => Ok("dummy"),
            Err(e) if errno(&e) == Some(EOPNOTSUPP) => {
                if kind == LinkKind::Dummy {
                    Err(InitError::NoDummy)
                } else {
                    tracing::warn!(link = name, "kernel has no dummy links; using a veth pair");
                    create_veth().await.map(|()| "veth")
                }
            }
            Err(source) => Err(InitError::Link {
                name: name.to_string(),
                action: "create dummy link",
                source,
            }),
        },
    }
}

async fn set_up(handle: &Handle, name: &str, index: u32) -> Result<(), InitError> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|source| InitError::Link {
            name: name.to_string(),
            action: "set up",
            source,
        })
}

async fn has_address(handle: &Handle, index: u32, addr: IpAddr) -> Result<bool, InitError> {
    let mut addrs = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    loop {
        match addrs.try_next().await {
            Ok(Some(msg)) => {
                let found = msg.attributes.iter().any(|a| {
                    matches!(a, AddressAttribute::Address(ip) | AddressAttribute::Local(ip) if *ip == addr)
                });
                if found {
                    return Ok(true);
                }
            }
            Ok(None) => return Ok(false),
            Err(source) => {
                return Err(InitError::Address {
                    name: format!("index {index}"),
                    addr,
                    source,
                });
            }
        }
    }
}

/// The output interface of the main-table route whose destination is exactly `addr`.
async fn route_oif(handle: &Handle, addr: IpAddr) -> Result<Option<u32>, InitError> {
    let query = match addr {
        IpAddr::V4(_) => RouteMessageBuilder::<Ipv4Addr>::new().build(),
        IpAddr::V6(_) => RouteMessageBuilder::<Ipv6Addr>::new().build(),
    };
    let mut routes = handle.route().get(query).execute();
    loop {
        match routes.try_next().await {
            Ok(Some(route)) => {
                let dst = route.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Destination(RouteAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
                    RouteAttribute::Destination(RouteAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
                    _ => None,
                });
                let full =
                    route.header.destination_prefix_length == if addr.is_ipv4() { 32 } else { 128 };
                // The kernel's local-table route for the address does not count: pods' traffic
                // is routed by the main table, where the official agent puts its route too.
                let table = route
                    .attributes
                    .iter()
                    .find_map(|a| match a {
                        RouteAttribute::Table(t) => Some(*t),
                        _ => None,
                    })
                    .unwrap_or(u32::from(route.header.table));
                if dst == Some(addr) && full && table == RT_TABLE_MAIN {
                    let oif = route.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Oif(i) => Some(*i),
                        _ => None,
                    });
                    return Ok(oif);
                }
            }
            Ok(None) => return Ok(None),
            Err(source) => {
                return Err(InitError::Route {
                    name: "main table".into(),
                    dst: addr,
                    source,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_names_fit_the_interface_name_limit() {
        assert_eq!(peer_name("pod-id-link0"), "pod-id-link0p");
        assert_eq!(peer_name("a-very-long-name-x").len(), 15);
    }
}
