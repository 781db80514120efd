package mesh

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Injected failures for demos and tests (docs/runtime-contract.md, "Injected failures"): on the
// business server only, never on the admin port's services, every call waits MESH_INJECT_DELAY_MS
// before its handler runs, unless its context ends first (the caller's deadline, or the caller
// cancelling), and then MESH_INJECT_FAILURE_PERCENT of calls are answered UNAVAILABLE.

// injectedFailures is the interceptors MESH_INJECT_* ask for (none by default), said once at WARN.
func injectedFailures(cfg Config, log *slog.Logger) []grpc.ServerOption {
	if cfg.InjectFailurePercent == 0 && cfg.InjectDelay == 0 {
		return nil
	}
	log.Warn(fmt.Sprintf("injecting failures: %s=%d, %s=%d",
		EnvInjectFailure, cfg.InjectFailurePercent, EnvInjectDelay, cfg.InjectDelay.Milliseconds()))
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(UnaryInjectedFailures(cfg.InjectFailurePercent, cfg.InjectDelay)),
		grpc.ChainStreamInterceptor(StreamInjectedFailures(cfg.InjectFailurePercent, cfg.InjectDelay)),
	}
}

// UnaryInjectedFailures delays every call by delay, then fails percent % of them UNAVAILABLE.
func UnaryInjectedFailures(percent int, delay time.Duration) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if err := inject(ctx, percent, delay); err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamInjectedFailures is UnaryInjectedFailures for streams.
func StreamInjectedFailures(percent int, delay time.Duration) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if err := inject(ss.Context(), percent, delay); err != nil {
			return err
		}
		return handler(srv, ss)
	}
}

func inject(ctx context.Context, percent int, delay time.Duration) error {
	if delay > 0 {
		timer := time.NewTimer(delay)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-ctx.Done(): // the caller already has its status; the handler does not run
			return status.FromContextError(ctx.Err()).Err()
		}
	}
	if rand.IntN(100) < percent {
		return status.Errorf(codes.Unavailable, "injected failure (%s=%d)", EnvInjectFailure, percent)
	}
	return nil
}
