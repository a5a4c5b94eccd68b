package ca

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestChain(t *testing.T) {
	dir := t.TempDir()
	ts, err := NewTokenStore(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := ts.Create("shop", "cart", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	fixed := authFunc(func(_ context.Context, c string) (Identity, error) {
		if c == "kube-token" {
			return Identity{Namespace: "k", ServiceAccount: "s"}, nil
		}
		return Identity{}, fmt.Errorf("%w: not a kube token", ErrInvalidToken)
	})
	ch := Chain{ts, fixed}
	if id, err := ch.Authenticate(context.Background(), tok); err != nil || id.ServiceAccount != "cart" {
		t.Fatalf("join token: %v %v", id, err)
	}
	if id, err := ch.Authenticate(context.Background(), "kube-token"); err != nil || id.ServiceAccount != "s" {
		t.Fatalf("second authenticator: %v %v", id, err)
	}
	if _, err := ch.Authenticate(context.Background(), "garbage"); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("garbage: %v", err)
	}
	if _, err := (Chain{}).Authenticate(context.Background(), tok); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("empty chain: %v", err)
	}
}

type authFunc func(context.Context, string) (Identity, error)

func (f authFunc) Authenticate(ctx context.Context, c string) (Identity, error) { return f(ctx, c) }
