# Reference values for tests/test_survival_competing.py (Gray's test): cmprsk::cuminc's
# k-sample test of equal cumulative incidence (rho = 0), on cif_mgus2.csv (months, many ties).
# Run from tests/data:  Rscript gray_reference.R
library(cmprsk)
options(digits = 17)
d <- read.csv("cif_mgus2.csv")
# Three age bands, as the test builds them: [0, 65), [65, 75), [75, Inf).
d$age_band <- cut(d$age, c(-Inf, 65, 75, Inf), right = FALSE, labels = c("lt65", "65to74", "ge75"))
show <- function(name, fit) {
  cat(name, "\n")
  print(fit$Tests, digits = 17)
}
show("sex", cuminc(d$etime, d$event, group = d$sex, cencode = "censored"))
show("age_band", cuminc(d$etime, d$event, group = d$age_band, cencode = "censored"))
show("sex_strata_age_band",
     cuminc(d$etime, d$event, group = d$sex, strata = d$age_band, cencode = "censored"))
show("age_band_rho_1", cuminc(d$etime, d$event, group = d$age_band, cencode = "censored", rho = 1))
# A small frame with ties within and across causes, and group c whose risk set empties at
# time 4 while a and b go on (the test builds the same columns).
small <- data.frame(
  time = c(2, 7, 6, 3, 1, 4, 3, 4, 3, 4, 2, 4, 1, 7, 1, 6, 4, 4, 7, 5, 4, 4, 4, 1, 1, 6, 6, 4, 4, 4),
  event = c("relapse", "censored", "relapse", "death", "censored", "relapse", "death", "relapse",
            "relapse", "relapse", "censored", "censored", "death", "censored", "censored",
            "death", "death", "death", "death", "death", "relapse", "death", "censored", "death",
            "death", "censored", "censored", "censored", "death", "relapse"),
  group = c("c", "a", "a", "b", "c", "c", "c", "c", "b", "c", "b", "c", "a", "b", "c", "a", "c",
            "a", "b", "a", "c", "c", "c", "c", "a", "a", "b", "c", "c", "a")
)
show("small", cuminc(small$time, small$event, group = small$group, cencode = "censored"))
