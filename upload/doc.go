// Package upload builds app images: safe bundle extraction, reproducible
// SquashFS images and a parallel, cached Python installer.
//
// Status: in progress.
package upload
