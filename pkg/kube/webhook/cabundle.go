package webhook

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// CABundlePatcher keeps the caBundle of the named webhook configurations
// equal to the webhook's own CA, so the webhook manages its serving
// certificate by itself: the chart creates the configurations without a
// bundle, the webhook generates a certificate at start and patches them,
// and re-patches when a configuration is re-created or edited.
type CABundlePatcher struct {
	Client               kubernetes.Interface
	Mutating, Validating string // configuration names; "" skips one
	CABundle             []byte
	Logger               *slog.Logger
}

// Sync patches both configurations once. A configuration that does not
// exist (yet) is an error naming it.
func (p *CABundlePatcher) Sync(ctx context.Context) error {
	var errs []error
	if p.Mutating != "" {
		errs = append(errs, p.syncMutating(ctx))
	}
	if p.Validating != "" {
		errs = append(errs, p.syncValidating(ctx))
	}
	return errors.Join(errs...)
}

func (p *CABundlePatcher) syncMutating(ctx context.Context) error {
	api := p.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	return patchBundle(ctx, p, "mutatingwebhookconfiguration", p.Mutating,
		func() (*admissionregistrationv1.MutatingWebhookConfiguration, error) {
			return api.Get(ctx, p.Mutating, metav1.GetOptions{})
		},
		func(cfg *admissionregistrationv1.MutatingWebhookConfiguration) []*admissionregistrationv1.WebhookClientConfig {
			ccs := make([]*admissionregistrationv1.WebhookClientConfig, len(cfg.Webhooks))
			for i := range cfg.Webhooks {
				ccs[i] = &cfg.Webhooks[i].ClientConfig
			}
			return ccs
		},
		func(cfg *admissionregistrationv1.MutatingWebhookConfiguration) error {
			_, err := api.Update(ctx, cfg, metav1.UpdateOptions{})
			return err
		})
}

func (p *CABundlePatcher) syncValidating(ctx context.Context) error {
	api := p.Client.AdmissionregistrationV1().ValidatingWebhookConfigurations()
	return patchBundle(ctx, p, "validatingwebhookconfiguration", p.Validating,
		func() (*admissionregistrationv1.ValidatingWebhookConfiguration, error) {
			return api.Get(ctx, p.Validating, metav1.GetOptions{})
		},
		func(cfg *admissionregistrationv1.ValidatingWebhookConfiguration) []*admissionregistrationv1.WebhookClientConfig {
			ccs := make([]*admissionregistrationv1.WebhookClientConfig, len(cfg.Webhooks))
			for i := range cfg.Webhooks {
				ccs[i] = &cfg.Webhooks[i].ClientConfig
			}
			return ccs
		},
		func(cfg *admissionregistrationv1.ValidatingWebhookConfiguration) error {
			_, err := api.Update(ctx, cfg, metav1.UpdateOptions{})
			return err
		})
}

// patchBundle reads one webhook configuration, sets the bundle of each of
// its client configs and writes it back when anything changed. The two
// configuration kinds differ only in their Go types.
func patchBundle[T any](ctx context.Context, p *CABundlePatcher, kind, name string,
	get func() (T, error), clientConfigs func(T) []*admissionregistrationv1.WebhookClientConfig, update func(T) error) error {
	cfg, err := get()
	if err != nil {
		return fmt.Errorf("%s %s: %w", kind, name, err)
	}
	if !setCABundle(clientConfigs(cfg), p.CABundle) {
		return nil
	}
	if err := update(cfg); err != nil {
		return fmt.Errorf("%s %s: %w", kind, name, err)
	}
	p.log().Info("patched caBundle", kind, name)
	return nil
}

// setCABundle sets every client config's bundle to ca and reports whether
// any changed.
func setCABundle(ccs []*admissionregistrationv1.WebhookClientConfig, ca []byte) bool {
	changed := false
	for _, cc := range ccs {
		if !bytes.Equal(cc.CABundle, ca) {
			cc.CABundle = ca
			changed = true
		}
	}
	return changed
}

func (p *CABundlePatcher) log() *slog.Logger {
	if p.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return p.Logger
}

// Run syncs every interval until ctx ends, logging failures (an update
// conflict or a configuration not created yet is retried next round).
func (p *CABundlePatcher) Run(ctx context.Context, interval time.Duration) {
	for {
		if err := p.Sync(ctx); err != nil && ctx.Err() == nil {
			p.log().Warn("caBundle sync", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}
