//go:build tools

// Package tools pins the cilium-operator main package into this module.
package tools

import _ "github.com/cilium/cilium/operator"
