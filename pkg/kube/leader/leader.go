// Package leader runs control-plane singletons (status writer, CA root
// publisher, ...) on one replica at a time: a Kubernetes Lease elects the
// leader, and the work runs only while this replica holds it.
package leader

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Options configure an election. Namespace and Name name the Lease.
type Options struct {
	Client          kubernetes.Interface
	Namespace, Name string
	// Identity is this replica's name in the Lease (default: hostname and
	// pid).
	Identity string
	// LeaseDuration, RenewDeadline and RetryPeriod default to 15 s, 10 s
	// and 2 s (client-go's recommended values).
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	Logger                                    *slog.Logger
}

// Run campaigns until ctx ends and calls work with a context that is
// cancelled when leadership is lost; after losing it, Run campaigns again.
// It returns when ctx ends.
func Run(ctx context.Context, o Options, work func(ctx context.Context)) error {
	if o.Identity == "" {
		host, _ := os.Hostname()
		o.Identity = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	if o.LeaseDuration == 0 {
		o.LeaseDuration, o.RenewDeadline, o.RetryPeriod = 15*time.Second, 10*time.Second, 2*time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	log := o.Logger.With("lease", o.Namespace+"/"+o.Name, "identity", o.Identity)
	lock, err := resourcelock.New(resourcelock.LeasesResourceLock, o.Namespace, o.Name, nil, o.Client.CoordinationV1(),
		resourcelock.ResourceLockConfig{Identity: o.Identity})
	if err != nil {
		return fmt.Errorf("leader election %s/%s: %w", o.Namespace, o.Name, err)
	}
	for ctx.Err() == nil {
		le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
			Lock: lock, LeaseDuration: o.LeaseDuration, RenewDeadline: o.RenewDeadline, RetryPeriod: o.RetryPeriod,
			ReleaseOnCancel: true,
			Callbacks: leaderelection.LeaderCallbacks{
				OnStartedLeading: func(ctx context.Context) {
					log.Info("became leader")
					work(ctx)
				},
				OnStoppedLeading: func() { log.Info("stopped leading") },
			},
		})
		if err != nil {
			return fmt.Errorf("leader election %s/%s: %w", o.Namespace, o.Name, err)
		}
		le.Run(ctx) // returns when leadership is lost or ctx ends
	}
	return nil
}
