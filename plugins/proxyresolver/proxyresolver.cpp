// SPDX-License-Identifier: LGPL-2.1-or-later
// proxyresolver.cpp — org.freedesktop.portal.ProxyResolver for the guest:
// which proxy a VM's application should use for a URI.
//
// Why it must exist: with GTK_USE_PORTAL=1 GIO picks GProxyResolverPortal
// whenever org.freedesktop.portal.Desktop has an owner — and in a VM with
// sidebus it always has. Every GSocketClient connection asks it first; a
// portal that does not answer Lookup fails every connection the application
// makes.
//
// What is honest: the host's proxy settings describe the host's network. A
// VM's traffic leaves through the VM's own network stack, usually a VMM's
// NAT that does not go through the host user's proxy at all, and the host's
// PAC script or proxy (perhaps with credentials in its URL) is nothing the
// VM should be told by default. So:
//  - by default every URI answers ["direct://"]: connect directly, which is
//    what the VM's network does;
//  - with portals.proxyresolver.use_host_proxy = true, the host's own
//    answer (its xdg-desktop-portal's Lookup), for VMs whose traffic really
//    goes through the host's network and proxy.
// The URI is checked either way (at most 4096 bytes, an absolute URI with a
// scheme, as GIO's proxy enumerator builds them: "https://host:443",
// "none://host:80"), so nothing malformed reaches the host's resolver
// (libproxy, PAC scripts). version: 1.
#include <libpeas/peas.h>
#include <sidebus-plugin.h>

#include <cstring>
#include <memory>

#include "proxyresolver-dbus.h"
#include "portal-module.hpp"

namespace sidebus::proxyresolver {
namespace {

constexpr char kInterface[] = "org.freedesktop.portal.ProxyResolver";
constexpr guint32 kImplementedVersion = 1;
constexpr std::size_t kMaxUriLength = 4096;

struct GObjectUnref {
  void operator()(gpointer object) const { g_object_unref(object); }
};
template <typename T>
using GObjectPtr = std::unique_ptr<T, GObjectUnref>;

const SidebusConfigKey kConfigKeys[] = {
    {"use_host_proxy", SIDEBUS_CONFIG_BOOLEAN, 0, 0, nullptr, {}},
};

// Why @uri is not one to look up, or nullptr.
const char* refuse_uri(const char* uri) {
  std::size_t length = strlen(uri);
  if (length == 0) return "the URI is empty";
  if (length > kMaxUriLength) return "the URI is longer than 4096 bytes";
  for (const char* c = uri; *c != '\0'; c++)
    if (static_cast<unsigned char>(*c) <= 0x20 || *c == 0x7f) return "the URI has spaces or control characters";
  g_autoptr(GUri) parsed = g_uri_parse(uri, G_URI_FLAGS_NONE, nullptr);
  if (parsed == nullptr) return "not a URI";
  const char* host = g_uri_get_host(parsed);
  if (host == nullptr || *host == '\0') return "the URI names no host";
  return nullptr;
}

class ProxyResolver {
 public:
  static std::unique_ptr<ProxyResolver> start(SidebusContext* context, GError** error);
  ~ProxyResolver();
  ProxyResolver(const ProxyResolver&) = delete;
  ProxyResolver& operator=(const ProxyResolver&) = delete;

 private:
  ProxyResolver(SidebusContext* context, bool use_host_proxy);
  static gboolean on_lookup(SidebusProxyResolverGenProxyResolver* skeleton, GDBusMethodInvocation* invocation,
                            const char* uri, gpointer user_data);

  SidebusContext* context_;
  bool use_host_proxy_;
  GObjectPtr<SidebusProxyResolverGenProxyResolver> skeleton_;
};

std::unique_ptr<ProxyResolver> ProxyResolver::start(SidebusContext* context, GError** error) {
  bool use_host_proxy =
      json_object_get_boolean_member_with_default(sidebus_context_get_config(context), "use_host_proxy", FALSE);
  if (use_host_proxy && sidebus_context_get_host_version(context, kInterface) == 0) {
    g_set_error(error, SIDEBUS_ERROR, SIDEBUS_ERROR_NOT_SUPPORTED,
                "portals.proxyresolver.use_host_proxy is set, but the host portal has no ProxyResolver");
    return nullptr;
  }
  std::unique_ptr<ProxyResolver> self(new ProxyResolver(context, use_host_proxy));
  if (!sidebus_context_export(context, G_DBUS_INTERFACE_SKELETON(self->skeleton_.get()), error)) return nullptr;
  sidebus_context_log(context, G_LOG_LEVEL_DEBUG, "ProxyResolver version %u: %s", kImplementedVersion,
                      use_host_proxy ? "the host's proxies" : "direct connections (direct://)");
  return self;
}

ProxyResolver::ProxyResolver(SidebusContext* context, bool use_host_proxy)
    : context_(context),
      use_host_proxy_(use_host_proxy),
      skeleton_(sidebus_proxy_resolver_gen_proxy_resolver_skeleton_new()) {
  sidebus_proxy_resolver_gen_proxy_resolver_set_version(skeleton_.get(), kImplementedVersion);
  g_signal_connect(skeleton_.get(), "handle-lookup", G_CALLBACK(on_lookup), this);
}

ProxyResolver::~ProxyResolver() { g_signal_handlers_disconnect_by_data(skeleton_.get(), this); }

gboolean ProxyResolver::on_lookup(SidebusProxyResolverGenProxyResolver* skeleton, GDBusMethodInvocation* invocation,
                                  const char* uri, gpointer user_data) {
  auto* self = static_cast<ProxyResolver*>(user_data);
  if (const char* why = refuse_uri(uri)) {
    g_autofree char* shown = g_strescape(uri, nullptr);
    sidebus_context_reject(
        self->context_, invocation,
        g_error_new(SIDEBUS_ERROR, SIDEBUS_ERROR_INVALID_ARGUMENT, "cannot look up “%.128s”: %s", shown, why));
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  if (!self->use_host_proxy_) {
    const char* direct[] = {"direct://", nullptr};
    sidebus_proxy_resolver_gen_proxy_resolver_complete_lookup(skeleton, invocation, direct);
    return G_DBUS_METHOD_INVOCATION_HANDLED;
  }
  // The host's answer (as) or its error, as they are.
  sidebus_context_forward_call(self->context_, invocation, kInterface, "Lookup", g_variant_new("(s)", uri), nullptr,
                               nullptr, nullptr, nullptr);
  return G_DBUS_METHOD_INVOCATION_HANDLED;
}

}  // namespace
}  // namespace sidebus::proxyresolver

// ---- The libpeas extension -------------------------------------------------

SIDEBUS_PORTAL_MODULE(SidebusProxyresolverPortal, sidebus_proxyresolver_portal, sidebus::proxyresolver::ProxyResolver,
                      std::span<const SidebusConfigKey>(sidebus::proxyresolver::kConfigKeys))
