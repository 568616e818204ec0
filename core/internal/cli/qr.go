package cli

import (
	"fmt"
	"strings"

	"github.com/boombuler/barcode/qr"
)

// quietZone is the light border a QR code needs around it, in modules.
const quietZone = 2

// renderQR draws text as a QR code with Unicode half blocks, two modules per character cell. With
// ansi it fixes the colours (dark modules black, light ones white) so that the code scans on dark
// and light terminal themes alike; without, light modules are drawn (for a light-on-dark terminal).
func renderQR(text string, ansi bool) (string, error) {
	code, err := qr.Encode(text, qr.M, qr.Auto)
	if err != nil {
		return "", fmt.Errorf("QR code: %w", err)
	}
	n := code.Bounds().Dx()
	dark := func(x, y int) bool {
		x, y = x-quietZone, y-quietZone
		if x < 0 || y < 0 || x >= n || y >= n {
			return false
		}
		r, _, _, _ := code.At(x, y).RGBA()
		return r < 0x8000
	}
	size := n + 2*quietZone
	var b strings.Builder
	for y := 0; y < size; y += 2 {
		if ansi {
			b.WriteString("\033[97;40m") // foreground white, background black
		}
		for x := 0; x < size; x++ {
			top, bottom := !dark(x, y), y+1 < size && !dark(x, y+1) // light modules are drawn
			if y+1 >= size {
				bottom = false
			}
			b.WriteString(halfBlock(top, bottom))
		}
		if ansi {
			b.WriteString("\033[0m")
		}
		b.WriteByte('\n')
	}
	return b.String(), nil
}

// halfBlock is the character with its upper and lower halves drawn as given.
func halfBlock(upper, lower bool) string {
	switch {
	case upper && lower:
		return "█"
	case upper:
		return "▀"
	case lower:
		return "▄"
	}
	return " "
}
