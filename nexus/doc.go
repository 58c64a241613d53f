// Package nexus records who runs what where: services announce themselves
// with heartbeats, two or more resolvers keep the table with grace periods,
// and clients ask any resolver. The balancer learns its backend nodes from
// nexus through a plain function value wired in examples/.
//
// Status: planned; the package holds no API yet.
package nexus
