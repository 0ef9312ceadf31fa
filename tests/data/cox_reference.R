# Reference numbers for tests/test_survival_cox.py (coxph, concordance, cox.zph).
# Run from tests/data:  Rscript cox_reference.R   (R survival 3.5-3)
# Writes the datasets it uses (cox_lung.csv, cox_veteran.csv, cox_heart.csv) and R's results
# (cox_reference_coefficients.csv, cox_reference_fit.csv, cox_reference_zph.csv).
# Terms are renamed to the toolkit's dummy names (celltype[large] for R's celltypelarge).
library(survival)
out <- function(frame, name) write.csv(frame, name, row.names = FALSE)

lung_data <- data.frame(time = lung$time, event = as.integer(lung$status == 2), age = lung$age,
                        sex = lung$sex, ph_ecog = lung$ph.ecog, inst = lung$inst)
veteran_data <- data.frame(time = veteran$time, event = veteran$status, trt = veteran$trt,
                           karno = veteran$karno, age = veteran$age,
                           celltype = as.character(veteran$celltype))
heart_data <- data.frame(id = heart$id, start = heart$start, stop = heart$stop,
                         event = heart$event, age = heart$age, year = heart$year,
                         surgery = heart$surgery,
                         transplant = as.integer(as.character(heart$transplant)))
out(lung_data, "cox_lung.csv")
out(veteran_data, "cox_veteran.csv")
out(heart_data, "cox_heart.csv")

# Factor levels sorted alphabetically: the toolkit codes against the first sorted level.
veteran_data$celltype <- factor(veteran_data$celltype, levels = sort(unique(veteran_data$celltype)))
models <- list(
  veteran = coxph(Surv(time, event) ~ trt + karno + age + celltype, veteran_data),
  lung = coxph(Surv(time, event) ~ age + sex + ph_ecog, lung_data),
  lung_strata = coxph(Surv(time, event) ~ age + ph_ecog + strata(sex), lung_data),
  lung_cluster = coxph(Surv(time, event) ~ age + sex, lung_data, cluster = inst),
  heart = coxph(Surv(start, stop, event) ~ age + year + surgery + transplant, heart_data)
)
toolkit_name <- function(term) sub("^celltype(.*)$", "celltype[\\1]", term)
coefficients <- fits <- zph <- list()
for (name in names(models)) {
  fit <- models[[name]]
  estimate <- coef(fit)
  std_error <- sqrt(diag(vcov(fit)))  # robust (grouped dfbeta sandwich) when cluster is given
  z <- estimate / std_error
  interval <- confint(fit)
  coefficients[[name]] <- data.frame(
    model = name, term = toolkit_name(names(estimate)), estimate = estimate,
    std_error = std_error, statistic = z, p_value = 2 * pnorm(-abs(z)),
    conf_low = interval[, 1], conf_high = interval[, 2], hazard_ratio = exp(estimate),
    hr_conf_low = exp(interval[, 1]), hr_conf_high = exp(interval[, 2]))
  fits[[name]] <- data.frame(model = name, n = fit$n, events = fit$nevent,
                             log_likelihood = fit$loglik[2],
                             concordance = concordance(fit)$concordance)
  if (name != "heart") {
    table <- cox.zph(fit)$table  # transform = "km", terms = TRUE
    zph[[name]] <- data.frame(model = name, term = rownames(table), statistic = table[, "chisq"],
                              dof = table[, "df"], p_value = table[, "p"])
  }
}
out(do.call(rbind, coefficients), "cox_reference_coefficients.csv")
out(do.call(rbind, fits), "cox_reference_fit.csv")
out(do.call(rbind, zph), "cox_reference_zph.csv")
