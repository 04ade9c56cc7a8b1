# Markdown tables from the CSV of scripts/scale.sh (impl,custody,n,metric,
# value,sign,dh,generate,import,destroy): per operation the three
# implementations with ratios, memory, hsmls with SoftHSM beside software
# custody with the token operations, and where each peer stopped.
function t(ms) {
    if (ms == "") return ""
    if (ms >= 1000) return sprintf("%.2f s", ms / 1000)
    if (ms >= 100) return sprintf("%.0f ms", ms)
    if (ms >= 10) return sprintf("%.1f ms", ms)
    if (ms >= 1) return sprintf("%.2f ms", ms)
    return sprintf("%.0f µs", ms * 1000)
}
function ratio(a, b) { return (a == "" || b == "" || b == 0) ? "" : sprintf("%.2f", a / b) }
function num(x,    s, out) {
    s = sprintf("%d", x); out = ""
    while (length(s) > 3) { out = "," substr(s, length(s) - 2) out; s = substr(s, 1, length(s) - 3) }
    return s out
}
function mb(kb) { return kb == "" ? "" : sprintf("%.1f MB", kb / 1024) }
NR == 1 { next }
{
    gsub(/"/, "", $5)
    key = $1 SUBSEP $2 SUBSEP $3 SUBSEP $4
    v[key] = $5
    ops[key] = $6 "/" $7 "/" $8 "/" $9 "/" $10
    if (!($3 in seen)) { seen[$3] = 1; ns[++nn] = $3 + 0 }
    if ($4 == "stopped") stop[$1] = "N = " num($3) ": " $5
}
END {
    # sizes in increasing order
    for (i = 1; i <= nn; i++) for (j = i + 1; j <= nn; j++) if (ns[j] < ns[i]) { x = ns[i]; ns[i] = ns[j]; ns[j] = x }
    split("keypackage create join update-create update-process remove-create remove-process protect-100 unprotect-100 protect-10k unprotect-10k save-full save load", op, " ")
    split("hsmls openmls mls-rs", im, " ")
    for (o = 1; o <= 14; o++) {
        printf "\n#### %s\n\n", op[o]
        print "| N | hsmls | openmls | mls-rs | openmls / hsmls | mls-rs / hsmls |"
        print "| ---: | ---: | ---: | ---: | ---: | ---: |"
        for (i = 1; i <= nn; i++) {
            n = ns[i]; h = v["hsmls" SUBSEP "software" SUBSEP n SUBSEP op[o]]
            a = v["openmls" SUBSEP "software" SUBSEP n SUBSEP op[o]]
            b = v["mls-rs" SUBSEP "software" SUBSEP n SUBSEP op[o]]
            if (h == "" && a == "" && b == "") continue
            printf "| %s | %s | %s | %s | %s | %s |\n", num(n), t(h), t(a), t(b), ratio(a, h), ratio(b, h)
        }
    }
    print "\n#### Memory: peak resident size (VmHWM of the run), saved state, bytes written by save\n"
    print "| N | peak RSS hsmls | openmls | mls-rs | state hsmls | openmls | mls-rs | save wrote hsmls | openmls | mls-rs |"
    print "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    for (i = 1; i <= nn; i++) {
        n = ns[i]; line = "| " num(n)
        for (k = 1; k <= 3; k++) line = line " | " mb(v[im[k] SUBSEP "software" SUBSEP n SUBSEP "peak_rss_kb"])
        for (k = 1; k <= 3; k++) { s = v[im[k] SUBSEP "software" SUBSEP n SUBSEP "state_bytes"]; line = line " | " (s == "" ? "" : num(s) " B") }
        for (k = 1; k <= 3; k++) { s = v[im[k] SUBSEP "software" SUBSEP n SUBSEP "written_bytes"]; line = line " | " (s == "" ? "" : num(s) " B") }
        print line " |"
    }
    print "\n#### hsmls: SoftHSM custody beside software custody\n"
    print "Token operations per MLS operation (sign / dh / generate / import / destroy; per message for protect/unprotect, per KeyPackage for keypackage), counted by the bench's `Counting` custody around the measured members' keys.\n"
    print "| N | operation | software | softhsm | softhsm / software | token ops |"
    print "| ---: | --- | ---: | ---: | ---: | --- |"
    for (i = 1; i <= nn; i++) {
        n = ns[i]
        for (o = 1; o <= 14; o++) {
            k2 = "hsmls" SUBSEP "softhsm" SUBSEP n SUBSEP op[o]
            if (!(k2 in v)) continue
            s = v["hsmls" SUBSEP "software" SUBSEP n SUBSEP op[o]]
            printf "| %s | %s | %s | %s | %s | %s |\n", num(n), op[o], t(s), t(v[k2]), ratio(v[k2], s), ops[k2]
        }
        k2 = "hsmls" SUBSEP "softhsm" SUBSEP n SUBSEP "peak_rss_kb"
        if (k2 in v) printf "| %s | peak RSS | %s | %s | | |\n", num(n), mb(v["hsmls" SUBSEP "software" SUBSEP n SUBSEP "peak_rss_kb"]), mb(v[k2])
    }
    print "\n#### Where each implementation stopped\n"
    for (k = 1; k <= 3; k++) printf "- %s: %s\n", im[k], (im[k] in stop) ? stop[im[k]] : "ran every N of the run"
}
