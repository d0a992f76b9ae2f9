//go:build tools

// Package tools pins MetalLB's controller main package into this module.
package tools

import _ "go.universe.tf/metallb/controller"
