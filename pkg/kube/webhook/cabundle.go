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
	cfg, err := api.Get(ctx, p.Mutating, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("mutating webhook configuration %s: %w", p.Mutating, err)
	}
	ccs := make([]*admissionregistrationv1.WebhookClientConfig, len(cfg.Webhooks))
	for i := range cfg.Webhooks {
		ccs[i] = &cfg.Webhooks[i].ClientConfig
	}
	if !setCABundle(ccs, p.CABundle) {
		return nil
	}
	if _, err := api.Update(ctx, cfg, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("mutating webhook configuration %s: %w", p.Mutating, err)
	}
	p.log().Info("patched caBundle", "mutatingwebhookconfiguration", p.Mutating)
	return nil
}

func (p *CABundlePatcher) syncValidating(ctx context.Context) error {
	api := p.Client.AdmissionregistrationV1().ValidatingWebhookConfigurations()
	cfg, err := api.Get(ctx, p.Validating, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("validating webhook configuration %s: %w", p.Validating, err)
	}
	ccs := make([]*admissionregistrationv1.WebhookClientConfig, len(cfg.Webhooks))
	for i := range cfg.Webhooks {
		ccs[i] = &cfg.Webhooks[i].ClientConfig
	}
	if !setCABundle(ccs, p.CABundle) {
		return nil
	}
	if _, err := api.Update(ctx, cfg, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("validating webhook configuration %s: %w", p.Validating, err)
	}
	p.log().Info("patched caBundle", "validatingwebhookconfiguration", p.Validating)
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
