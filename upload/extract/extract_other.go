//go:build !unix

package extract

// syscallNoFollow is 0 where O_NOFOLLOW does not exist; O_EXCL still refuses
// an existing name.
const syscallNoFollow = 0
