//! The parties of the source document (晋社管组发〔2021〕2号): the units and
//! the two mechanisms, as `pki init` writes them into an example config.

/// (id, English name, Chinese name)
pub const UNITS: &[(&str, &str, &str)] = &[
    (
        "civil-affairs",
        "Provincial Civil Affairs Department",
        "省民政厅",
    ),
    (
        "publicity",
        "Publicity Department of the Provincial Party Committee",
        "省委宣传部",
    ),
    (
        "political-legal",
        "Political and Legal Affairs Commission",
        "省委政法委",
    ),
    ("cyberspace", "Cyberspace Affairs Office", "省委网信办"),
    ("education", "Education Department", "省教育厅"),
    ("public-security", "Public Security Department", "省公安厅"),
    (
        "hr-social-security",
        "Human Resources and Social Security Department",
        "省人力资源和社会保障厅",
    ),
    (
        "culture-tourism",
        "Culture and Tourism Department",
        "省文化和旅游厅",
    ),
    ("health", "Health Commission", "省卫生健康委"),
    (
        "market-regulation",
        "Market Regulation Administration",
        "省市场监管局",
    ),
    ("foreign-affairs", "Foreign Affairs Office", "省外事办"),
    (
        "state-security",
        "State Security Department",
        "省国家安全厅",
    ),
    ("tax", "Tax Bureau", "省税务局"),
    ("finance", "Finance Department", "省财政厅"),
    (
        "pbc-taiyuan",
        "People's Bank of China, Taiyuan Central Sub-branch",
        "中国人民银行太原中心支行",
    ),
];

/// A mechanism of the source document.
pub struct Mechanism {
    pub id: &'static str,
    pub name: &'static str,
    pub name_zh: &'static str,
    pub lead: &'static str,
    pub members: &'static [&'static str],
}

pub const MECHANISMS: &[Mechanism] = &[
    Mechanism {
        id: "joint-enforcement",
        name: "Joint enforcement mechanism for province-wide social organizations",
        name_zh: "全省性社会组织联合执法机制",
        lead: "civil-affairs",
        members: &[
            "civil-affairs",
            "publicity",
            "political-legal",
            "cyberspace",
            "education",
            "public-security",
            "hr-social-security",
            "culture-tourism",
            "health",
            "market-regulation",
            "foreign-affairs",
            "state-security",
            "tax",
        ],
    },
    Mechanism {
        id: "fund-supervision",
        name: "Fund supervision mechanism for province-wide social organizations",
        name_zh: "全省性社会组织资金监管机制",
        lead: "civil-affairs",
        members: &[
            "civil-affairs",
            "finance",
            "public-security",
            "state-security",
            "tax",
            "pbc-taiyuan",
        ],
    },
];
