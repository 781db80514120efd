// grpc-js-xds reads its feature flags from the environment once, when it is loaded: this module is
// imported before it (xds.ts), so that every TypeScript service accepts the RBAC HTTP filters the
// control plane puts on its server listener from AuthorizationPolicy (without the flag grpc-js-xds
// NACKs such a listener). An operator's explicit value is kept.
process.env.GRPC_XDS_EXPERIMENTAL_RBAC ??= 'true';
